"""What the services need from the outside world (typing.Protocol ports).

Adapters implement these: ``index`` (SQLite, PostgreSQL, MySQL via SQLAlchemy Core, and
an in-memory reference), ``storage`` (filesystem), ``events`` (in-process).  Services
depend only on this module and on ``domain``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from dicomcloud.domain.events import StoredEvent
from dicomcloud.domain.query import Query
from dicomcloud.domain.records import (
    DuplicatePolicy,
    ExtractedInstance,
    InstanceRecord,
    StoreOutcome,
)
from dicomcloud.domain.results import InstanceResult, SeriesResult, StudyResult


@dataclass(frozen=True, slots=True)
class InstanceWrite:
    """One instance to index, with the event to put in the outbox when it commits."""

    extracted: ExtractedInstance
    event: StoredEvent
    policy: DuplicatePolicy


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """An event committed with its instance, waiting to be relayed to the bus."""

    id: int
    topic: str
    key: str
    payload: str


class Index(Protocol):
    """The relational index of patients, studies, series and instances."""

    async def store_instances(self, writes: Sequence[InstanceWrite]) -> list[StoreOutcome]:
        """Index every write in ONE transaction (group commit) and return an outcome per
        write, in order.

        Patient, study and series rows are upserted (the newest instance's attributes
        win); the instance row is inserted, replaced or left alone according to the
        write's DuplicatePolicy; an outbox row is added for each STORED or REPLACED
        instance.  Raises ``IdentityConflict`` if a write's series already belongs to
        another study (then nothing of the batch is committed, and the caller retries
        the others one by one), ``IndexUnavailable`` if the database fails.
        """
        ...

    async def get_instance(self, tenant_id: str, sop_instance_uid: str) -> InstanceRecord | None:
        """The indexed instance with this SOP Instance UID, if any."""
        ...

    async def search_studies(self, tenant_id: str, query: Query) -> list[StudyResult]:
        """The tenant's studies matching a STUDY-level ``query`` (PS3.18 10.6, PS3.4
        C.2.2.2), with their patient and computed attributes.

        Order: StudyDate newest first, studies without a date last, then by
        StudyInstanceUID (code points); ``query.offset`` and ``query.limit`` page through
        that order.  Raises ``QueryError`` for a key not searchable at the study level.
        """
        ...

    async def search_series(self, tenant_id: str, query: Query) -> list[SeriesResult]:
        """The tenant's series matching a SERIES-level ``query`` (study and series keys),
        with their study, patient and NumberOfSeriesRelatedInstances.

        Order: SeriesNumber, series without one last, then SeriesInstanceUID (code
        points); ``query.offset`` and ``query.limit`` page through that order.
        """
        ...

    async def search_instances(self, tenant_id: str, query: Query) -> list[InstanceResult]:
        """The tenant's instances matching an IMAGE-level ``query`` (study, series and
        instance keys), with their series, study and patient.

        Order: InstanceNumber, instances without one last, then SOPInstanceUID (code
        points); ``query.offset`` and ``query.limit`` page through that order.
        """
        ...

    async def fetch_outbox(self, limit: int) -> list[OutboxMessage]:
        """The oldest unpublished outbox messages, oldest first."""
        ...

    async def mark_published(self, ids: Sequence[int]) -> None:
        """Remove relayed messages from the outbox."""
        ...

    async def ping(self) -> None:
        """Raise ``IndexUnavailable`` unless the database answers."""
        ...

    async def close(self) -> None: ...


class BlobStore(Protocol):
    """Durable storage of Part-10 files by key."""

    async def put(
        self, key: str, chunks: Iterable[bytes | memoryview], *, if_absent: bool = False
    ) -> int | None:
        """Store the concatenated chunks under ``key`` atomically and durably (the
        bytes are on stable storage when this returns); return the size written.

        Replaces an existing object, unless ``if_absent``: then an existing object is
        left alone and None is returned."""
        ...

    async def get(self, key: str) -> bytes:
        """The whole object; ``NotFound`` if absent."""
        ...

    def stream(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """The object in chunks, without holding it whole in memory."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object if present."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def ping(self) -> None:
        """Raise ``StorageUnavailable`` unless the store is writable."""
        ...


class EventBus(Protocol):
    """Where committed events are published for workers and other consumers."""

    async def publish(self, topic: str, key: str, payload: str) -> None: ...

    async def close(self) -> None: ...
