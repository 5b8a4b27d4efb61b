"""What the services need from the outside world (typing.Protocol ports).

Adapters implement these: ``index`` (SQLite, PostgreSQL, MySQL via SQLAlchemy Core, and
an in-memory reference), ``storage`` (filesystem, S3), ``events`` (in-process, Redis
Streams, Kafka), ``cache`` (memory, Redis).  Services depend only on this module and on
``domain``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from dicomcloud.domain.access import AccessQuery, AccessRecord
from dicomcloud.domain.derived import DerivedCopy, TranscodeFailure
from dicomcloud.domain.events import StoredEvent
from dicomcloud.domain.query import Query
from dicomcloud.domain.records import (
    DuplicatePolicy,
    ExtractedInstance,
    InstanceRecord,
    StoreOutcome,
)
from dicomcloud.domain.results import (
    InstanceResult,
    PatientResult,
    SeriesResult,
    StudyResult,
)


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


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    """What to delete: a study, one of its series, or one instance of that series (the
    UIDs of the levels above must match, as in the WADO-RS path)."""

    tenant_id: str
    study_instance_uid: str
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    #: Who asked, for the ``instance.deleted`` events: "DICOMweb" or "CLI".
    source: str = "DICOMweb"
    principal: str | None = None


@dataclass(frozen=True, slots=True)
class Deletion:
    """What one committed deletion removed from the index."""

    #: The removed instances, as the index had them (their blobs are still there).
    instances: tuple[InstanceRecord, ...]
    #: Series and study left without instances, whose rows went too.
    removed_series: tuple[str, ...]
    study_removed: bool
    #: The study's patient, and whether its row went (its last study).
    patient_id: str
    patient_removed: bool
    #: Blob keys of the viewer-ready copies whose rows were removed with them.
    derived_blob_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LevelCounts:
    """How many studies, series and instances a tenant has (the study browser shows
    them)."""

    studies: int
    series: int
    instances: int


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

    async def delete_instances(self, request: DeleteRequest) -> Deletion | None:
        """Remove what ``request`` names in ONE transaction: the instance rows, their
        extended query tag values and viewer-ready copy rows, each series and the study
        left without instances (with their tag values), the patient left without
        studies, and an ``instance.deleted`` outbox row per instance.  None (and
        nothing changed) if nothing matched.  Counts and computed attributes of what
        remains are computed at search time, so they follow at once."""
        ...

    async def count_levels(self, tenant_id: str) -> LevelCounts:
        """How many studies, series and instances ``tenant_id`` has."""
        ...

    async def series_blob_keys(
        self, tenant_id: str, series_instance_uids: Sequence[str]
    ) -> dict[str, set[str]]:
        """For each of these series that holds instances: the blob keys its instances
        are stored under, and (SQL index) those of their viewer-ready copies.  One
        statement per table whatever the number of series (storage garbage collection
        asks in batches: is this key still referenced?)."""
        ...

    async def search_patients(self, tenant_id: str, query: Query) -> list[PatientResult]:
        """The tenant's patients matching a PATIENT-level ``query`` (PS3.4 C.6.1.1.2),
        with NumberOfPatientRelatedStudies, -Series and -Instances.

        Order: PatientID (code points); ``query.offset`` and ``query.limit`` page through
        that order.
        """
        ...

    async def list_instances(
        self,
        tenant_id: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
    ) -> list[InstanceRecord]:
        """Every instance of a study (or of one of its series), in series,
        InstanceNumber (absent last), SOP Instance UID order: what retrieve and metadata
        read, one statement on the instance table alone."""
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


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object found by ``BlobStore.list_objects``."""

    key: str
    size: int
    #: When it was last written, in seconds since the epoch (UTC).
    modified: float


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

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes of the object from ``offset`` (fewer at its end), for frames
        and bulk data served without reading the whole object; ``NotFound`` if absent."""
        ...

    async def size(self, key: str) -> int:
        """The object's size in bytes; ``NotFound`` if absent."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object if present."""
        ...

    async def exists(self, key: str) -> bool: ...

    def list_objects(self, prefix: str = "") -> AsyncIterator[StoredObject]:
        """Every stored object whose key starts with ``prefix`` (temporary files of
        writes in progress excluded), in no particular order: what ``dicomcloud storage
        gc`` compares with the index."""
        ...

    async def ping(self) -> None:
        """Raise ``StorageUnavailable`` unless the store is writable."""
        ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message handed to a consumer (see docs/events.md).

    ``attempt`` counts deliveries to the consumer group, this one included: above 1 the
    message was delivered before and not acknowledged (a failed or crashed handler).
    ``headers`` carry the dead-letter details (``error``, ``group``, ``attempts``,
    ``topic``) on a ``<topic>.dlq`` message; ordinary events have none.
    """

    topic: str
    key: str
    payload: str
    id: str
    attempt: int = 1
    headers: Mapping[str, str] = field(default_factory=dict)


#: A consumer: returning acknowledges the message, raising asks for a redelivery.
Handler = Callable[[Delivery], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing handler is retried before its message goes to ``<topic>.dlq``."""

    max_attempts: int = 5
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (exponential)."""
        return float(min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1)))


class Subscription(Protocol):
    """A running consumer of one group; ``stop`` leaves unacknowledged messages to
    be redelivered (to another consumer of the group, or to the next start)."""

    async def stop(self) -> None: ...


class EventBus(Protocol):
    """Where committed events are published, and consumed by consumer groups.

    Delivery is at least once: a message is acknowledged only after its handler
    returned, so handlers must be idempotent.  Every group gets every message of the
    topic; within a group each message goes to one consumer.
    """

    async def publish(
        self, topic: str, key: str, payload: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Hand one message to the bus; return once the bus holds it durably (raise
        otherwise, and the outbox keeps it).  Messages of one ``key`` stay in order."""
        ...

    async def publish_many(self, messages: Sequence[tuple[str, str, str]]) -> None:
        """Publish ``(topic, key, payload)`` messages in order, in as few round trips
        as the bus allows; return once the bus holds all of them (raise otherwise:
        some may have been published, and will be again)."""
        ...

    async def consume(
        self,
        topic: str,
        group: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = 1,
    ) -> Subscription:
        """Start a consumer of ``group`` on ``topic``.  A failing handler is retried
        with backoff; after ``retry.max_attempts`` the message goes to ``<topic>.dlq``
        with the error, and is acknowledged.  ``concurrency`` > 1 handles that many
        messages at once (then messages of one key may be handled out of order)."""
        ...

    async def close(self) -> None: ...


class Cache(Protocol):
    """A key-value cache with per-entry TTL (``memory://``, ``redis://``).

    Every operation may raise ``CacheUnavailable``; the archive uses caches only
    through ``dicomcloud.cache.FailSafeCache``, which turns that into a miss.
    """

    async def get(self, key: str) -> bytes | None:
        """The value, or None if absent or expired.  A counter reads as its decimal
        digits."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """``get`` of each key, in one round trip."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Keep ``value`` for ``ttl`` seconds (a bounded cache may drop it earlier)."""
        ...

    async def delete(self, key: str) -> None: ...

    async def incr(self, key: str) -> int:
        """Add one to the counter ``key`` (created at 0, never expires); its new value."""
        ...

    async def ping(self) -> None:
        """Raise ``CacheUnavailable`` unless the cache answers."""
        ...

    async def close(self) -> None: ...


class AccessLogStore(Protocol):
    """Where access records are kept for administrators (the audit trail)."""

    async def append(self, records: Sequence[AccessRecord]) -> None:
        """Keep every record, in ONE transaction; appending a record again (same
        tenant and event id, after a retried commit) keeps it once."""
        ...

    async def search(self, query: AccessQuery) -> list[AccessRecord]:
        """The records matching ``query``, by time (newest first unless told), then
        event id; ``query.offset`` and ``query.limit`` page through that order."""
        ...

    async def purge(self, before: datetime) -> int:
        """Delete the records older than ``before``; return how many."""
        ...


class DerivedCopyStore(Protocol):
    """Which viewer-ready copies of instances exist (``dicomcloud.domain.derived``),
    and which conversions failed: one copy and one failure record at most per
    (tenant, SOP Instance UID, transfer syntax)."""

    async def record_copy(self, copy: DerivedCopy) -> DerivedCopy | None:
        """Keep ``copy`` (replacing the instance's copy in that syntax, if any) and
        forget a failure recorded for it, in ONE transaction; return the copy it
        replaced (its blob is the caller's to delete), or None."""
        ...

    async def get_copy(
        self, tenant_id: str, sop_instance_uid: str, transfer_syntax_uid: str
    ) -> DerivedCopy | None:
        """The instance's copy in ``transfer_syntax_uid``, if any."""
        ...

    async def list_copies(self, tenant_id: str, sop_instance_uid: str) -> list[DerivedCopy]:
        """Every copy of the instance, by transfer syntax."""
        ...

    async def record_failure(self, failure: TranscodeFailure) -> TranscodeFailure:
        """Record a failed conversion: ``attempts`` is one more than the record of the
        same source version had (1 for a new one or another version); the record as
        kept is returned."""
        ...

    async def get_failure(
        self, tenant_id: str, sop_instance_uid: str, transfer_syntax_uid: str
    ) -> TranscodeFailure | None:
        """The failure recorded for the instance in ``transfer_syntax_uid``, if any."""
        ...

    async def delete_copy(self, copy: DerivedCopy) -> bool:
        """Remove the record of ``copy`` if it is still the instance's copy in its
        syntax (same blob key); whether it was removed."""
        ...

    async def forget(self, tenant_id: str, sop_instance_uid: str) -> list[DerivedCopy]:
        """Remove every copy and failure record of the instance (it was deleted);
        return the copies removed (their blobs are the caller's to delete)."""
        ...
