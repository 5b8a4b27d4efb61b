"""What a C-GET or C-MOVE retrieves (PS3.4 C.4.2.1.4, C.4.3.1.3, C.6.1.1, C.6.2.1) and
the sub-operations that send it.

:func:`parse_retrieve_identifier` turns the request identifier into an IMAGE-level
:class:`~dicomcloud.domain.query.Query` of the QIDO-RS engine: the unique key of the
Query/Retrieve level (one UID or a list of UIDs; Patient ID at the PATIENT level) is
required, unique keys of the levels above are matched when given (single values), and
unique keys below the level are refused.  Other attributes are not keys of a retrieve
and are ignored.  :class:`InstanceSource` runs the search and reads the stored objects
on the archive's event loop (the next one while the current one is sent), and
:func:`store_sub_operations` yields
them to pynetdicom's C-GET / C-MOVE SCP as pending sub-operations.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from typing import Any, Final, TypeVar

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicomcloud.dimse.contexts import PATIENT_ROOT_SOP_CLASSES
from dicomcloud.dimse.store_scu import EncodedInstance
from dicomcloud.domain.query import Query, QueryError, QueryLevel, parse_qido
from dicomcloud.domain.records import InstanceRecord
from dicomcloud.ports import BlobStore
from dicomcloud.services.query import INSTANCE_SEARCH_KEYS, QueryService
from dicomcloud.services.retrieve import RetrieveService

__all__ = [
    "MAX_SUB_OPERATIONS",
    "InstanceSource",
    "RetrieveFailed",
    "parse_retrieve_identifier",
    "store_sub_operations",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Number of ... Sub-operations are US (PS3.7 9.1.3, 9.1.4): at most 65535 per request.
MAX_SUB_OPERATIONS: Final = 65535

STATUS_PENDING: Final = 0xFF00
STATUS_CANCEL: Final = 0xFE00
STATUS_OUT_OF_RESOURCES_MATCHES: Final = 0xA701
STATUS_UNABLE_TO_PROCESS: Final = 0xC000

#: Query/Retrieve levels of each information model, top down (PS3.4 C.6.1.1, C.6.2.1).
_PATIENT_ROOT_LEVELS: Final = (
    QueryLevel.PATIENT,
    QueryLevel.STUDY,
    QueryLevel.SERIES,
    QueryLevel.IMAGE,
)
_STUDY_ROOT_LEVELS: Final = (QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE)
#: The unique key of each level (PS3.4 C.6.1.1.1).
_UNIQUE_KEYS: Final = {
    QueryLevel.PATIENT: "PatientID",
    QueryLevel.STUDY: "StudyInstanceUID",
    QueryLevel.SERIES: "SeriesInstanceUID",
    QueryLevel.IMAGE: "SOPInstanceUID",
}


class RetrieveFailed(Exception):
    """The request cannot be served; ``status`` is the C-GET / C-MOVE failure status."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


def _value(identifier: Dataset, keyword: str) -> str:
    """The key's value as text, values joined by backslashes.  A value as received is
    decoded here rather than by pydicom, whose validation warnings would not say which
    request they belong to (the UID checks of parse_qido do)."""
    if keyword not in identifier:
        return ""
    element = identifier.get_item(keyword)
    value: Any = element.value
    if isinstance(element, RawDataElement):
        if value is None:
            return ""
        if not isinstance(value, bytes):  # pragma: no cover - raw values are bytes
            raise QueryError(keyword, "cannot be read as text")
        utf8 = "192" in str(identifier.get("SpecificCharacterSet", ""))
        text = value.decode("utf-8" if utf8 else "latin-1", "replace")
        return "\\".join(part.strip(" \x00") for part in text.split("\\"))
    if value is None or value == "":
        return ""
    if isinstance(value, (bytes, bytearray)):
        raise QueryError(keyword, "cannot be read as text")
    values = list(value) if isinstance(value, MultiValue) else [value]
    return "\\".join(str(v).strip() for v in values)


def parse_retrieve_identifier(identifier: Dataset, sop_class: str) -> Query:
    """The IMAGE-level query selecting the instances a C-GET or C-MOVE identifier asks
    for, under the information model ``sop_class`` (PS3.4 C.4.2.2.1, C.4.3.2.1).

    Raises :class:`QueryError` naming the key for a missing or unsupported level, a
    missing unique key, a list where a single value is required, a key below the level,
    or a malformed UID.
    """
    levels = _PATIENT_ROOT_LEVELS if sop_class in PATIENT_ROOT_SOP_CLASSES else _STUDY_ROOT_LEVELS
    text = _value(identifier, "QueryRetrieveLevel")
    if not text:
        raise QueryError("QueryRetrieveLevel", "is missing")
    try:
        level = QueryLevel(text)
    except ValueError:
        raise QueryError("QueryRetrieveLevel", f"{text!r} is not a level") from None
    if level not in levels:
        raise QueryError("QueryRetrieveLevel", f"{text} is not a level of this model")
    depth = levels.index(level)
    params: list[tuple[str, str]] = []
    for above in levels[:depth]:
        keyword = _UNIQUE_KEYS[above]
        value = _value(identifier, keyword)
        if "\\" in value:
            raise QueryError(keyword, "must be a single value above the retrieve level")
        if value:
            params.append((keyword, value))
    keyword = _UNIQUE_KEYS[level]
    value = _value(identifier, keyword)
    if not value:
        raise QueryError(keyword, f"is required at the {level.value} level")
    if level is QueryLevel.PATIENT and "\\" in value:
        raise QueryError(keyword, "must be a single value")
    params.append((keyword, value))
    for below in levels[depth + 1 :]:
        keyword = _UNIQUE_KEYS[below]
        if _value(identifier, keyword):
            raise QueryError(keyword, f"is a key below the {level.value} level")
    for keyword, value in params:
        if keyword == "PatientID" and ("*" in value or "?" in value):
            raise QueryError(keyword, "must be a single value, not a wildcard pattern")
    query = parse_qido(QueryLevel.IMAGE, params, known=INSTANCE_SEARCH_KEYS)
    # One more than the most sub-operations a response can count: too many is detected.
    return replace(query, limit=MAX_SUB_OPERATIONS + 1)


class InstanceSource:
    """Selects instances and reads their stored objects for the DIMSE threads, on the
    archive's event loop."""

    def __init__(
        self,
        query: QueryService,
        blobs: BlobStore,
        loop: asyncio.AbstractEventLoop,
        *,
        timeout: float,
        retrieve: RetrieveService | None = None,
    ) -> None:
        """``retrieve``: where viewer-ready copies are found (sent instead of a
        conversion when the peer takes their syntax); None sends none."""
        self._query = query
        self._blobs = blobs
        self._loop = loop
        self._timeout = timeout
        self._retrieve = retrieve if retrieve is not None and retrieve.copies else None

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout=self._timeout)
        except FutureTimeout:
            future.cancel()
            raise

    def select(self, tenant_id: str, query: Query) -> list[InstanceRecord]:
        """The instances of ``tenant_id`` matching ``query``; :class:`RetrieveFailed` if
        the index fails or they are more than one request can count."""
        try:
            results = self._run(self._query.search_instances(tenant_id, query))
        except FutureTimeout:
            raise RetrieveFailed(
                STATUS_OUT_OF_RESOURCES_MATCHES, "timed out searching the index"
            ) from None
        except Exception as exc:
            log.exception("selecting instances to retrieve failed")
            raise RetrieveFailed(
                STATUS_OUT_OF_RESOURCES_MATCHES, f"cannot search the index: {exc}"
            ) from exc
        if len(results) > MAX_SUB_OPERATIONS:
            raise RetrieveFailed(
                STATUS_OUT_OF_RESOURCES_MATCHES,
                f"more than {MAX_SUB_OPERATIONS} instances match; retrieve less at once",
            )
        return [result.instance for result in results]

    def start_reading(self, record: InstanceRecord) -> Future[bytes]:
        """Start reading the stored object of ``record`` on the event loop."""
        return asyncio.run_coroutine_threadsafe(self._blobs.get(record.blob_key), self._loop)

    def finish_reading(self, record: InstanceRecord, reading: Future[bytes]) -> EncodedInstance:
        """The object read by ``reading``, or a placeholder saying why it could not be
        read (its sub-operation then fails)."""
        try:
            data = reading.result(timeout=self._timeout)
        except Exception as exc:
            reading.cancel()
            log.warning("cannot read instance %s: %r", record.sop_instance_uid, exc)
            return EncodedInstance(record, None, f"cannot read the stored object: {exc!r}")
        instance = EncodedInstance(record, data)
        if self._retrieve is not None:
            instance.load_copy = lambda target: self._copy(record, target)
        return instance

    def _copy(self, record: InstanceRecord, target: str) -> bytes | None:
        """The viewer-ready copy of ``record`` in ``target`` (None if there is none or
        it cannot be read now: the sub-operation converts instead)."""
        assert self._retrieve is not None
        try:
            return self._run(self._retrieve.copy_bytes(record, target))
        except Exception as exc:
            log.warning("copy of %s in %s not read: %r", record.sop_instance_uid, target, exc)
            return None


def failure(status: int, comment: str) -> Dataset:
    """A failure status with its ErrorComment (LO, 64 characters, PS3.7 C.4)."""
    ds = Dataset()
    ds.Status = status
    text = comment.encode("ascii", "replace").decode("ascii").replace("\\", "/")
    ds.ErrorComment = text[:64]
    return ds


def store_sub_operations(
    event: Any,
    source: InstanceSource,
    records: Sequence[InstanceRecord],
    *,
    move_originator: str | None = None,
) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """The (status, dataset) pairs after the number of sub-operations (pynetdicom's
    EVT_C_GET / EVT_C_MOVE protocol): one pending EncodedInstance per record, or Cancel
    (0xFE00) as soon as a C-CANCEL arrives (PS3.4 C.4.2.3.1).  pynetdicom sends the
    final response when the last sub-operation is done: Success, 0xB000 if some failed
    or warned, 0xA702 if all failed, with the Failed SOP Instance UID List (PS3.4
    C.4.2.1.5, C.4.3.1.4)."""
    # The next object is read while the current one is sent: at most two in memory.
    reading = source.start_reading(records[0]) if records else None
    for index, record in enumerate(records):
        assert reading is not None
        if event.is_cancelled:
            reading.cancel()
            yield STATUS_CANCEL, None
            return
        instance = source.finish_reading(record, reading)
        following = index + 1
        reading = source.start_reading(records[following]) if following < len(records) else None
        instance.move_originator = move_originator
        yield STATUS_PENDING, instance
