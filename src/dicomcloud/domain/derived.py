"""Viewer-ready copies: an instance kept once more in another transfer syntax, and the
record of a conversion that failed (the seed's conversion queue, done without loss).

A transfer syntax is an encoding of the same instance (PS3.5 10): the copy keeps the
SOP Instance UID, and is served by WADO-RS in place of a conversion on request.  The
original stays the reference; a copy is kept only for the stored version of the
instance it was made from (``source_version``), so a replaced instance never finds the
copy of its predecessor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime

from dicomcloud.domain.records import InstanceRecord

#: Characters kept of a failure's reason (the column's length).
REASON_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class DerivedCopy:
    """One instance in one more transfer syntax, stored under ``blob_key``."""

    tenant_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size: int
    #: Fingerprint of the stored original it was made from.
    source_version: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TranscodeFailure:
    """Why an instance could not be kept in ``transfer_syntax_uid``, and how often it
    was tried (the original is untouched whatever happened)."""

    tenant_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    source_version: str
    attempts: int
    reason: str
    failed_at: datetime

    def clipped(self) -> TranscodeFailure:
        if len(self.reason) <= REASON_LENGTH:
            return self
        return replace(self, reason=self.reason[: REASON_LENGTH - 1] + "…")


def source_version(record: InstanceRecord) -> str:
    """Fingerprint of the stored original an index record describes: where it is,
    its size and encoding, and the pixel attributes a replacement would change."""
    r = record
    text = (
        f"{r.blob_key}|{r.size}|{r.transfer_syntax_uid}|{r.sop_class_uid}|"
        f"{r.number_of_frames}|{r.rows}|{r.columns}|{r.bits_allocated}|{r.bits_stored}|"
        f"{r.samples_per_pixel}|{r.photometric_interpretation}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]
