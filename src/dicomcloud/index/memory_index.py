"""The in-memory reference implementation of the Index port.

Same observable behaviour as ``SqlIndex`` (the contract tests run both); used by fast
unit tests and as the executable statement of the semantics.  Nothing survives the
process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from dicomcloud.domain.events import (
    INSTANCE_DELETED,
    INSTANCE_STORED,
    StoredEvent,
    deleted_events,
)
from dicomcloud.domain.extended_tags import ExtendedTag, replacements
from dicomcloud.domain.patterns import (
    fold,
    fold_pattern,
    literal,
    person_name_forms,
    to_regex,
    wildcard,
)
from dicomcloud.domain.query import (
    MIDNIGHT,
    DateTimeRange,
    Match,
    Query,
    QueryError,
    QueryLevel,
    Range,
    SingleValue,
    UidList,
    Universal,
    Wildcard,
)
from dicomcloud.domain.records import (
    DuplicatePolicy,
    ExtractedInstance,
    InstanceRecord,
    PatientRecord,
    SeriesRecord,
    StoreOutcome,
    StudyRecord,
)
from dicomcloud.domain.results import (
    LEVEL_FIELDS,
    MODALITIES_IN_STUDY,
    PN,
    InstanceResult,
    PatientResult,
    SeriesResult,
    StudyResult,
)
from dicomcloud.errors import IdentityConflict, IndexUnavailable
from dicomcloud.index.sql_index import ordered
from dicomcloud.ports import DeleteRequest, Deletion, InstanceWrite, LevelCounts, OutboxMessage

T = TypeVar("T")
R = TypeVar("R")
_Key = tuple[str, str]


def _merge(old: T | None, new: T) -> T:
    """``new`` over ``old``, keeping old values where the new one is absent (None, or an
    empty PatientID)."""
    if old is None:
        return new
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(new):  # type: ignore[arg-type]
        value = getattr(new, field.name)
        if value is None or (field.name == "patient_id" and value == ""):
            continue
        changes[field.name] = value
    return dataclasses.replace(old, **changes)  # type: ignore[type-var]


def matches(node: Match, value: str | int | None, vr: str, *, fuzzy: bool) -> bool:
    """Whether a stored ``value`` satisfies one matching key: the reference semantics
    that ``dicomcloud.index.query_compiler`` compiles to SQL."""
    if isinstance(node, Universal):
        return True
    assert not isinstance(node, DateTimeRange), "two values: see date_time_matches"
    if value is None:
        return False
    if isinstance(node, UidList):
        return value in node.uids
    if isinstance(value, int):  # IS/US: single value matching only (parse_qido)
        return isinstance(node, SingleValue) and value == int(node.value)
    if isinstance(node, Range):
        if node.low is not None and node.high is not None and node.low > node.high:
            return value >= node.low or value <= node.high  # across midnight (TM)
        return (node.low is None or value >= node.low) and (node.high is None or value <= node.high)
    if vr != PN:
        if isinstance(node, SingleValue):
            return value == node.value
        return to_regex(wildcard(node.pattern)).fullmatch(value) is not None
    assert isinstance(node, SingleValue | Wildcard)
    pattern = literal(node.value) if isinstance(node, SingleValue) else wildcard(node.pattern)
    if fuzzy:  # PS3.4 C.2.2.2.6: case, accents and width folded on both sides
        value = fold(value)
        pattern = fold_pattern(pattern)
    return any(to_regex(form).fullmatch(value) for form in person_name_forms(pattern))


def date_time_matches(node: DateTimeRange, date: str | None, time: str | None) -> bool:
    """Combined date-time range matching (PS3.4 C.2.2.2.5.1): the reference semantics
    of ``query_compiler.date_time_condition``; a missing time counts as midnight."""
    if date is None:
        return False
    moment = (date, time or MIDNIGHT)
    return (node.low is None or moment >= node.low) and (node.high is None or moment <= node.high)


class MemoryIndex:
    """``dicomcloud.ports.Index`` in process memory."""

    def __init__(self, extended_tags: Sequence[ExtendedTag] = ()) -> None:
        """An empty index; ``extended_tags`` are the configured extended query tags
        (``dicomcloud.domain.extended_tags``) whose values it keeps."""
        self._extended_tags = tuple(extended_tags)
        #: (tenant, level, level UID, tag key) -> values
        self._extended: dict[tuple[str, str, str, str], tuple[str | int, ...]] = {}
        self._patients: dict[_Key, PatientRecord] = {}
        self._studies: dict[_Key, StudyRecord] = {}
        self._series: dict[_Key, SeriesRecord] = {}
        self._instances: dict[_Key, InstanceRecord] = {}
        self._outbox: dict[int, OutboxMessage] = {}
        self._next_id = 1
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise IndexUnavailable("the in-memory index is closed")

    async def migrate(self) -> None:
        """Nothing to do; present so callers can treat every index alike."""

    async def store_instances(self, writes: Sequence[InstanceWrite]) -> list[StoreOutcome]:
        # No await below: the whole batch is applied atomically within the event loop.
        self._check_open()
        outcomes: list[StoreOutcome] = []
        effective: list[tuple[ExtractedInstance, StoredEvent]] = []
        seen = set(self._instances)
        for write in writes:
            record = write.extracted.instance
            key = (record.tenant_id, record.sop_instance_uid)
            if key in seen:
                if write.policy is DuplicatePolicy.KEEP_FIRST:
                    outcomes.append(StoreOutcome.DUPLICATE)
                    continue
                outcomes.append(StoreOutcome.REPLACED)
            else:
                outcomes.append(StoreOutcome.STORED)
                seen.add(key)
            replaced = outcomes[-1] is StoreOutcome.REPLACED
            event = write.event
            if event.replaced != replaced:
                event = dataclasses.replace(event, replaced=replaced)
            effective.append((write.extracted, event))

        parents: dict[_Key, str] = {k: s.study_instance_uid for k, s in self._series.items()}
        for extracted, _ in effective:
            series = extracted.series
            key = (series.tenant_id, series.series_instance_uid)
            parent = parents.setdefault(key, series.study_instance_uid)
            if parent != series.study_instance_uid:
                raise IdentityConflict(
                    f"series {series.series_instance_uid} belongs to study {parent}, "
                    f"not to study {series.study_instance_uid}"
                )

        for extracted, event in effective:
            p, st, se, inst = (
                extracted.patient,
                extracted.study,
                extracted.series,
                extracted.instance,
            )
            key = (p.tenant_id, p.patient_id)
            self._patients[key] = _merge(self._patients.get(key), p)
            key = (st.tenant_id, st.study_instance_uid)
            self._studies[key] = _merge(self._studies.get(key), st)
            key = (se.tenant_id, se.series_instance_uid)
            old_series = self._series.get(key)
            if old_series is not None:
                se = dataclasses.replace(se, study_instance_uid=old_series.study_instance_uid)
            self._series[key] = _merge(old_series, se)
            self._instances[(inst.tenant_id, inst.sop_instance_uid)] = inst
            message = OutboxMessage(self._next_id, INSTANCE_STORED, event.key, event.to_json())
            self._outbox[self._next_id] = message
            self._next_id += 1
        self._extended.update(replacements(self._extended_tags, (e for e, _ in effective)))
        return outcomes

    async def get_instance(self, tenant_id: str, sop_instance_uid: str) -> InstanceRecord | None:
        self._check_open()
        return self._instances.get((tenant_id, sop_instance_uid))

    async def delete_instances(self, request: DeleteRequest) -> Deletion | None:
        # No await: applied atomically within the event loop, as a store is.
        self._check_open()
        tenant, study_uid = request.tenant_id, request.study_instance_uid
        study = self._studies.get((tenant, study_uid))
        if study is None:
            return None
        records = ordered(
            r
            for (t, _), r in self._instances.items()
            if t == tenant
            and r.study_instance_uid == study_uid
            and request.series_instance_uid in (None, r.series_instance_uid)
            and request.sop_instance_uid in (None, r.sop_instance_uid)
        )
        if not records:
            return None
        for r in records:
            del self._instances[(tenant, r.sop_instance_uid)]
        gone = {("instance", r.sop_instance_uid) for r in records}
        remaining = [r for (t, _), r in self._instances.items() if t == tenant]
        still = {r.series_instance_uid for r in remaining}
        study_removed = not any(r.study_instance_uid == study_uid for r in remaining)
        removed_series = sorted(
            uid
            for (t, uid), se in self._series.items()
            if t == tenant
            and se.study_instance_uid == study_uid
            and uid not in still
            and (study_removed or any(r.series_instance_uid == uid for r in records))
        )
        for uid in removed_series:
            del self._series[(tenant, uid)]
            gone.add(("series", uid))
        patient_id = study.patient_id
        patient_removed = False
        if study_removed:
            del self._studies[(tenant, study_uid)]
            gone.add(("study", study_uid))
            if not any(
                t == tenant and s.patient_id == patient_id for (t, _), s in self._studies.items()
            ):
                self._patients.pop((tenant, patient_id), None)
                patient_removed = True
        for key in [k for k in self._extended if k[0] == tenant and (k[1], k[2]) in gone]:
            del self._extended[key]
        for event in deleted_events(
            records,
            patient_id=patient_id,
            removed_series=removed_series,
            study_removed=study_removed,
            source=request.source,
            principal=request.principal,
        ):
            message = OutboxMessage(self._next_id, INSTANCE_DELETED, event.key, event.to_json())
            self._outbox[self._next_id] = message
            self._next_id += 1
        return Deletion(
            instances=tuple(records),
            removed_series=tuple(removed_series),
            study_removed=study_removed,
            patient_id=patient_id,
            patient_removed=patient_removed,
        )

    async def list_instances(
        self,
        tenant_id: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
    ) -> list[InstanceRecord]:
        """The instances of a study (or of one of its series), in series and
        InstanceNumber order."""
        self._check_open()
        return ordered(
            r
            for (tenant, _), r in self._instances.items()
            if tenant == tenant_id
            and r.study_instance_uid == study_instance_uid
            and (series_instance_uid is None or r.series_instance_uid == series_instance_uid)
        )

    async def count_instances(self, tenant_id: str) -> int:
        """How many instances the tenant has."""
        self._check_open()
        return sum(1 for tenant, _ in self._instances if tenant == tenant_id)

    async def count_levels(self, tenant_id: str) -> LevelCounts:
        """How many studies, series and instances the tenant has."""
        self._check_open()

        def count(records: dict[_Key, Any]) -> int:
            return sum(1 for tenant, _ in records if tenant == tenant_id)

        return LevelCounts(count(self._studies), count(self._series), count(self._instances))

    async def series_blob_keys(
        self, tenant_id: str, series_instance_uids: Sequence[str]
    ) -> dict[str, set[str]]:
        """The blob keys of these series' instances, by series (viewer-ready copies
        are recorded apart from an in-memory index)."""
        self._check_open()
        wanted = set(series_instance_uids)
        found: dict[str, set[str]] = {}
        for (tenant, _), record in self._instances.items():
            if tenant == tenant_id and record.series_instance_uid in wanted:
                found.setdefault(record.series_instance_uid, set()).add(record.blob_key)
        return found

    async def count_all_instances(self) -> int:
        """How many instances the index holds, all tenants together."""
        self._check_open()
        return len(self._instances)

    async def instance_page(
        self, after: tuple[str, str] | None, limit: int
    ) -> list[InstanceRecord]:
        """Up to ``limit`` instances after ``(tenant, SOP Instance UID)`` in that order."""
        self._check_open()
        keys = sorted(k for k in self._instances if after is None or k > after)
        return [self._instances[k] for k in keys[:limit]]

    async def refresh_derived(self, extracted: Sequence[ExtractedInstance]) -> None:
        """Rewrite the stored attributes (the folded names are derived by the records)
        of these instances and of their patient, study and series."""
        self._check_open()
        for item in extracted:
            _refresh(self._patients, item.patient, item.patient.patient_id)
            _refresh(self._studies, item.study, item.study.study_instance_uid)
            _refresh(self._series, item.series, item.series.series_instance_uid)
            _refresh(self._instances, item.instance, item.instance.sop_instance_uid)
        self._extended.update(replacements(self._extended_tags, extracted))

    def _page(
        self,
        query: Query,
        candidates: Sequence[dict[str, Any]],
        order: Callable[[dict[str, Any]], tuple[Any, ...]],
        series_of: Mapping[str, list[SeriesRecord]],
    ) -> list[dict[str, Any]]:
        """The page of ``candidates`` (records by level) matching ``query``, in ``order``."""
        found = [c for c in candidates if self._matches(query, c, series_of)]
        found.sort(key=order)
        end = None if query.limit is None else query.offset + query.limit
        return found[query.offset : end]

    def _tenant_series(self, tenant_id: str) -> dict[str, list[SeriesRecord]]:
        series_of: dict[str, list[SeriesRecord]] = {}
        for (tenant, _), se in self._series.items():
            if tenant == tenant_id:
                series_of.setdefault(se.study_instance_uid, []).append(se)
        return series_of

    def _with_parents(self, tenant_id: str, record: Any) -> dict[str, Any]:
        """``record`` (series or instance) with the records of the levels above."""
        found: dict[str, Any] = {}
        if isinstance(record, InstanceRecord):
            found["instance"] = record
            record = self._series[(tenant_id, record.series_instance_uid)]
        if isinstance(record, SeriesRecord):
            found["series"] = record
            record = self._studies[(tenant_id, record.study_instance_uid)]
        found["study"] = record
        found["patient"] = self._patients.get((tenant_id, record.patient_id))
        return found

    async def search_patients(self, tenant_id: str, query: Query) -> list[PatientResult]:
        """Patients matching ``query``; same order and semantics as ``SqlIndex``."""
        self._check_open()
        candidates = [
            {"patient": patient}
            for (tenant, _), patient in self._patients.items()
            if tenant == tenant_id
        ]
        page = self._page(query, candidates, lambda c: (c["patient"].patient_id,), {})
        results = []
        for found in page:
            patient_id = found["patient"].patient_id
            studies = {
                uid
                for (t, uid), st in self._studies.items()
                if t == tenant_id and st.patient_id == patient_id
            }
            series = sum(
                1
                for (t, _), se in self._series.items()
                if t == tenant_id and se.study_instance_uid in studies
            )
            instances = sum(
                1
                for (t, _), i in self._instances.items()
                if t == tenant_id and i.study_instance_uid in studies
            )
            results.append(PatientResult(found["patient"], len(studies), series, instances))
        return results

    async def search_studies(self, tenant_id: str, query: Query) -> list[StudyResult]:
        """Studies matching ``query``; same order and semantics as ``SqlIndex``."""
        self._check_open()
        series_of = self._tenant_series(tenant_id)
        candidates = [
            {"study": study, "patient": self._patients.get((tenant_id, study.patient_id))}
            for (tenant, _), study in self._studies.items()
            if tenant == tenant_id
        ]
        page = self._page(
            query,
            candidates,
            lambda c: (
                c["study"].study_date is None,
                _descending(c["study"].study_date or ""),
                c["study"].study_instance_uid,
            ),
            series_of,
        )
        results = []
        for found in page:
            study = found["study"]
            uid = study.study_instance_uid
            instances = [
                i
                for (t, _), i in self._instances.items()
                if t == tenant_id and i.study_instance_uid == uid
            ]
            study_series = series_of.get(uid, [])
            results.append(
                StudyResult(
                    study,
                    found["patient"],
                    len(study_series),
                    len(instances),
                    tuple(sorted({se.modality for se in study_series if se.modality})),
                    tuple(sorted({i.sop_class_uid for i in instances})),
                )
            )
        return results

    async def search_series(self, tenant_id: str, query: Query) -> list[SeriesResult]:
        """Series matching ``query``; same order and semantics as ``SqlIndex``."""
        self._check_open()
        candidates = [
            self._with_parents(tenant_id, se)
            for (tenant, _), se in self._series.items()
            if tenant == tenant_id
        ]
        page = self._page(
            query,
            candidates,
            lambda c: _number_then_uid(c["series"].series_number, c["series"].series_instance_uid),
            {},
        )
        counts: dict[str, int] = {}
        for (tenant, _), i in self._instances.items():
            if tenant == tenant_id:
                counts[i.series_instance_uid] = counts.get(i.series_instance_uid, 0) + 1
        return [
            SeriesResult(
                c["series"],
                c["study"],
                c["patient"],
                counts.get(c["series"].series_instance_uid, 0),
            )
            for c in page
        ]

    async def search_instances(self, tenant_id: str, query: Query) -> list[InstanceResult]:
        """Instances matching ``query``; same order and semantics as ``SqlIndex``."""
        self._check_open()
        candidates = [
            self._with_parents(tenant_id, i)
            for (tenant, _), i in self._instances.items()
            if tenant == tenant_id
        ]
        page = self._page(
            query,
            candidates,
            lambda c: _number_then_uid(
                c["instance"].instance_number, c["instance"].sop_instance_uid
            ),
            {},
        )
        return [InstanceResult(c["instance"], c["series"], c["study"], c["patient"]) for c in page]

    def _matches(
        self,
        query: Query,
        records: Mapping[str, Any],
        series_of: Mapping[str, list[SeriesRecord]],
    ) -> bool:
        """Whether the records (by level) satisfy every matching key of ``query``."""
        fields = LEVEL_FIELDS[query.level]
        extended = {tag.key: tag for tag in query.extended}
        for node in query.matches:
            tag = extended.get(node.keyword)
            if tag is not None:
                if not self._extended_matches(node, tag, records, fuzzy=query.fuzzy):
                    return False
                continue
            if node.keyword == MODALITIES_IN_STUDY and query.level is QueryLevel.STUDY:
                if isinstance(node, Universal):
                    continue
                study_series = series_of.get(records["study"].study_instance_uid, [])
                if not any(
                    matches(node, se.modality, "CS", fuzzy=query.fuzzy) for se in study_series
                ):
                    return False
                continue
            if isinstance(node, DateTimeRange):
                date, time = (
                    MemoryIndex._value(query, records, keyword)
                    for keyword in (node.keyword, node.time_keyword)
                )
                if not date_time_matches(node, date, time):
                    return False
                continue
            ref = fields.get(node.keyword)
            if ref is None:
                raise QueryError(
                    node.keyword, f"is not searchable at the {query.level.value} level"
                )
            record = records[ref.level]
            value = None if record is None else getattr(record, ref.name)
            if not matches(node, value, ref.vr, fuzzy=query.fuzzy):
                return False
        return True

    def _extended_matches(
        self, node: Match, tag: ExtendedTag, records: Mapping[str, Any], *, fuzzy: bool
    ) -> bool:
        """Whether one value of an extended query tag, in the record of its level,
        satisfies ``node`` (``query_compiler``: an EXISTS on ``extended_tag_value``);
        ``fuzzy`` folds PN values as for PatientName (PS3.4 C.2.2.2.6)."""
        if isinstance(node, Universal):
            return True
        record = records[tag.level]
        uid = getattr(record, _LEVEL_UID[tag.level])
        values = self._extended.get((record.tenant_id, tag.level, uid, tag.key), ())
        return any(matches(node, value, tag.vr, fuzzy=fuzzy) for value in values)

    @staticmethod
    def _value(query: Query, records: Mapping[str, Any], keyword: str) -> Any:
        ref = LEVEL_FIELDS[query.level].get(keyword)
        if ref is None:
            raise QueryError(keyword, f"is not searchable at the {query.level.value} level")
        record = records[ref.level]
        return None if record is None else getattr(record, ref.name)

    async def fetch_outbox(self, limit: int) -> list[OutboxMessage]:
        self._check_open()
        return [self._outbox[i] for i in sorted(self._outbox)[: max(limit, 0)]]

    async def mark_published(self, ids: Sequence[int]) -> None:
        self._check_open()
        for message_id in ids:
            self._outbox.pop(message_id, None)

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self._closed = True


_LEVEL_UID = {
    "study": "study_instance_uid",
    "series": "series_instance_uid",
    "instance": "sop_instance_uid",
}


def _refresh(store: dict[_Key, T], record: Any, key: str) -> None:
    """Replace the stored attributes of one record (``refresh_derived``)."""
    found = (record.tenant_id, key)
    old = store.get(found)
    if old is not None:
        store[found] = dataclasses.replace(old, attributes=record.attributes)  # type: ignore[type-var]


def _number_then_uid(number: int | None, uid: str) -> tuple[bool, int, str]:
    """Series and instance order: by number, absent numbers last, then by UID."""
    return (number is None, number or 0, uid)


def _descending(text: str) -> tuple[int, ...]:
    """A sort key that orders strings in reverse code-point order (dates newest first)."""
    return (*(-ord(c) for c in text), 1)
