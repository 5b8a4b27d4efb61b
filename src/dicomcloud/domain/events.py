"""The versioned instance events: ``instance.stored`` (the seed's ``DicomStoreMeta``)
and ``instance.deleted``.

Each is written to the outbox in the same index transaction as the instance rows, and
relayed to the event bus afterwards; its JSON form is the wire format on every bus.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from dicomcloud.domain.records import InstanceRecord

EVENT_VERSION = 1
INSTANCE_STORED = "instance.stored"
INSTANCE_DELETED = "instance.deleted"


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 section 5.7): 48-bit Unix ms, version, random."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One instance was durably stored and indexed."""

    event_id: str
    tenant_id: str
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    file_size: int
    number_of_frames: int | None
    accession_number: str | None
    study_date: str | None
    source: str  # "DIMSE", "STOW-RS" or "IMPORT"
    source_ip: str | None
    source_ae: str | None
    replaced: bool
    stored_at: str  # ISO 8601, UTC
    #: Which process stored it ("host:pid"), the seed's worker_node_id.
    node_id: str = ""
    type: str = INSTANCE_STORED
    version: int = EVENT_VERSION

    @property
    def key(self) -> str:
        """Partition key: events of one study stay in order on a partitioned bus."""
        return f"{self.tenant_id}/{self.study_instance_uid}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> StoredEvent:
        """The event in ``text``; fields this version does not know are ignored (later
        releases may add fields without changing ``version``, docs/events.md)."""
        data: dict[str, Any] = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})


_FIELDS = frozenset(f.name for f in fields(StoredEvent))


@dataclass(frozen=True, slots=True)
class DeletedEvent:
    """One instance was removed from the index (``dicomcloud.services.deletion``).

    Written to the outbox in the index transaction that removed the instance, one per
    instance, and relayed on topic ``instance.deleted`` with the same partition key as
    ``instance.stored`` (``{tenant}/{study}``), so a consumer sees the deletion after
    the store it undoes.  ``series_deleted`` / ``study_deleted`` tell that the request
    left the series / study without instances (their rows are gone too);
    ``request_id`` is the same for every instance of one request.  The blobs are
    removed after the commit: when this event arrives ``blob_key`` may still exist
    for a short while.  Schema in docs/events.md.
    """

    event_id: str
    request_id: str
    tenant_id: str
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    blob_key: str
    series_deleted: bool
    study_deleted: bool
    source: str  # "DICOMweb" or "CLI"
    principal: str | None
    deleted_at: str  # ISO 8601, UTC
    node_id: str = ""
    type: str = INSTANCE_DELETED
    version: int = EVENT_VERSION

    @property
    def key(self) -> str:
        """Partition key: the study's, as for ``StoredEvent``."""
        return f"{self.tenant_id}/{self.study_instance_uid}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> DeletedEvent:
        """The event in ``text``; unknown fields are ignored (as for ``StoredEvent``)."""
        data: dict[str, Any] = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in _DELETED_FIELDS})


_DELETED_FIELDS = frozenset(f.name for f in fields(DeletedEvent))


def deleted_events(
    records: Iterable[InstanceRecord],
    *,
    patient_id: str,
    removed_series: Collection[str],
    study_removed: bool,
    source: str,
    principal: str | None,
) -> list[DeletedEvent]:
    """The ``instance.deleted`` events of one deletion request, one per instance."""
    request_id = str(uuid7())
    now = utc_now_iso()
    node = node_id()
    return [
        DeletedEvent(
            event_id=str(uuid7()),
            request_id=request_id,
            tenant_id=r.tenant_id,
            patient_id=patient_id,
            study_instance_uid=r.study_instance_uid,
            series_instance_uid=r.series_instance_uid,
            sop_instance_uid=r.sop_instance_uid,
            sop_class_uid=r.sop_class_uid,
            blob_key=r.blob_key,
            series_deleted=r.series_instance_uid in removed_series,
            study_deleted=study_removed,
            source=source,
            principal=principal,
            deleted_at=now,
            node_id=node,
        )
        for r in records
    ]


def node_id() -> str:
    """This process as a node of the archive: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
