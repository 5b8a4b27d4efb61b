"""The versioned instance-stored event (the seed's ``DicomStoreMeta``).

It is written to the outbox in the same index transaction as the instance rows, and
relayed to the event bus afterwards; its JSON form is the wire format on every bus.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

EVENT_VERSION = 1
INSTANCE_STORED = "instance.stored"


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


def node_id() -> str:
    """This process as a node of the archive: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
