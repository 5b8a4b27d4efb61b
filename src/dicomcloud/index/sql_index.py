"""The Index port on SQLAlchemy Core, for SQLite, PostgreSQL and MySQL/MariaDB.

One call of ``store_instances`` is one transaction (group commit, DESIGN.md "Data flow"
step 3) of a few statements whatever the batch size: one SELECT for the SOP instances
that already exist, one executemany upsert per level, one SELECT to check series
parentage, one executemany INSERT for new instances and one for the outbox (the drivers
pipeline or fold executemany into multi-row statements; the compiled SQL is cached).
Upserts are the only dialect-specific statements.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from dicomcloud.domain.events import INSTANCE_DELETED, INSTANCE_STORED, StoredEvent, deleted_events
from dicomcloud.domain.extended_tags import (
    ExtendedTag,
    Replacements,
    folded_value,
    person_name_keys,
    replacements,
)
from dicomcloud.domain.query import Query, QueryLevel
from dicomcloud.domain.records import (
    DuplicatePolicy,
    ExtractedInstance,
    InstanceRecord,
    PatientRecord,
    SeriesRecord,
    StoreOutcome,
    StudyRecord,
)
from dicomcloud.domain.results import InstanceResult, PatientResult, SeriesResult, StudyResult
from dicomcloud.errors import IdentityConflict
from dicomcloud.index import schema, unit_of_work
from dicomcloud.index.engine import create_engine_for
from dicomcloud.index.migrate import migrate_engine
from dicomcloud.index.query_compiler import TABLES, query_conditions
from dicomcloud.ports import DeleteRequest, Deletion, InstanceWrite, LevelCounts, OutboxMessage

R = TypeVar("R")

PATIENT_FIELDS = tuple(f.name for f in dataclasses.fields(PatientRecord))
STUDY_FIELDS = tuple(f.name for f in dataclasses.fields(StudyRecord))
SERIES_FIELDS = tuple(f.name for f in dataclasses.fields(SeriesRecord))
INSTANCE_FIELDS = tuple(f.name for f in dataclasses.fields(InstanceRecord))

_Key = tuple[str, str]

#: Written, but read only when asked for (``Query.with_attributes``) or never (the folded
#: names are derived again by the records).
_WRITE_ONLY = frozenset({"attributes", "patient_name_fuzzy", "referring_physician_name_fuzzy"})
INSTANCE_READ = tuple(name for name in INSTANCE_FIELDS if name not in _WRITE_ONLY)

#: Columns and record type of each level, for reading joined search rows.
_LEVEL_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "patient": PATIENT_FIELDS,
    "study": STUDY_FIELDS,
    "series": SERIES_FIELDS,
    "instance": INSTANCE_FIELDS,
}
_RECORD_TYPES: Mapping[str, type[Any]] = {
    "patient": PatientRecord,
    "study": StudyRecord,
    "series": SeriesRecord,
    "instance": InstanceRecord,
}
#: The levels read by a search: the searched one and every one above it.
_SEARCHED_LEVELS: Mapping[QueryLevel, tuple[str, ...]] = {
    QueryLevel.PATIENT: ("patient",),
    QueryLevel.STUDY: ("study", "patient"),
    QueryLevel.SERIES: ("series", "study", "patient"),
    QueryLevel.IMAGE: ("instance", "series", "study", "patient"),
}

# Statements run on every store, built once (bound parameters; "uids" expands to a list).
_EXISTING_INSTANCES = sa.select(schema.instance.c.sop_instance_uid).where(
    schema.instance.c.tenant_id == sa.bindparam("tenant_id"),
    schema.instance.c.sop_instance_uid.in_(sa.bindparam("uids", expanding=True)),
)
_SERIES_PARENTS = sa.select(
    schema.series.c.series_instance_uid, schema.series.c.study_instance_uid
).where(
    schema.series.c.tenant_id == sa.bindparam("tenant_id"),
    schema.series.c.series_instance_uid.in_(sa.bindparam("uids", expanding=True)),
)
_INSTANCE = sa.select(*(schema.instance.c[name] for name in INSTANCE_READ)).where(
    schema.instance.c.tenant_id == sa.bindparam("tenant_id"),
    schema.instance.c.sop_instance_uid == sa.bindparam("sop_instance_uid"),
)


def _as_row(record: Any, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(record, name) for name in names}


def _chunks(items: Sequence[R], size: int) -> Iterator[Sequence[R]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` over ``old``, keeping old values where the new one is absent."""
    if old is None:
        return new
    merged = {k: (v if v is not None else old[k]) for k, v in new.items()}
    if merged.get("patient_id") == "" and "patient_id" in old:
        merged["patient_id"] = old["patient_id"]
    return merged


def instance_record(row: Mapping[Any, Any]) -> InstanceRecord:
    return InstanceRecord(**{name: row[name] for name in INSTANCE_READ})


def ordered(records: Iterable[InstanceRecord]) -> list[InstanceRecord]:
    """Instances in series, InstanceNumber (absent last), SOP Instance UID order; done in
    Python so that every backend sorts (and places NULLs) alike."""
    return sorted(
        records,
        key=lambda r: (
            r.series_instance_uid,
            r.instance_number is None,
            r.instance_number or 0,
            r.sop_instance_uid,
        ),
    )


class SqlIndex:
    """``dicomcloud.ports.Index`` on a relational database."""

    def __init__(self, engine: AsyncEngine, extended_tags: Sequence[ExtendedTag] = ()) -> None:
        """An index on ``engine`` (``create_engine_for``); on SQLite, units of work run on
        a synchronous twin of the engine in worker threads (``unit_of_work``).
        ``extended_tags`` are the configured extended query tags whose values it keeps
        (``dicomcloud.domain.extended_tags``)."""
        self._engine = engine
        self._extended_tags = tuple(extended_tags)
        self._person_names = person_name_keys(self._extended_tags)
        self._runner = unit_of_work.runner_for(engine)
        self._dialect = engine.dialect.name
        self._upserts = {
            schema.patient.name: self._upsert(schema.patient),
            schema.study.name: self._upsert(schema.study),
            # the first instance of a series fixes its study for good
            schema.series.name: self._upsert(schema.series, fixed=("study_instance_uid",)),
        }

    @classmethod
    def from_url(cls, url: str, extended_tags: Sequence[ExtendedTag] = ()) -> SqlIndex:
        """An index on the database at ``url`` (no connection is made yet)."""
        return cls(create_engine_for(url), extended_tags)

    @property
    def engine(self) -> AsyncEngine:
        """The async engine: migrations and ad-hoc queries (tests, tools)."""
        return self._engine

    @property
    def runner(self) -> unit_of_work.Runner:
        """What runs this index's transactions."""
        return self._runner

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        await migrate_engine(self._engine)

    # --- writes -------------------------------------------------------------------------

    async def store_instances(self, writes: Sequence[InstanceWrite]) -> list[StoreOutcome]:
        if not writes:
            return []

        def work(conn: Connection) -> list[StoreOutcome]:
            return self._store(conn, writes)

        return await self._runner.run(work, write=True, what=f"storing {len(writes)} instance(s)")

    def _store(self, conn: Connection, writes: Sequence[InstanceWrite]) -> list[StoreOutcome]:
        now = datetime.now(UTC)
        existing = self._existing_instances(conn, writes)

        outcomes: list[StoreOutcome] = []
        effective: list[ExtractedInstance] = []
        new_rows: dict[_Key, dict[str, Any]] = {}
        replaced_rows: dict[_Key, dict[str, Any]] = {}
        events: list[StoredEvent] = []
        for write in writes:
            record = write.extracted.instance
            key = (record.tenant_id, record.sop_instance_uid)
            row = _as_row(record, INSTANCE_FIELDS)
            if key in existing or key in new_rows:
                if write.policy is DuplicatePolicy.KEEP_FIRST:
                    outcomes.append(StoreOutcome.DUPLICATE)
                    continue
                outcomes.append(StoreOutcome.REPLACED)
                (new_rows if key in new_rows else replaced_rows)[key] = row
            else:
                outcomes.append(StoreOutcome.STORED)
                new_rows[key] = row
            effective.append(write.extracted)
            replaced = outcomes[-1] is StoreOutcome.REPLACED
            events.append(
                write.event
                if write.event.replaced == replaced
                else dataclasses.replace(write.event, replaced=replaced)
            )
        if not effective:
            return outcomes

        self._upsert_levels(conn, effective, now)
        self._check_series_parents(conn, effective)
        # After the upserts: the level rows are locked, concurrent batches wait here.
        _write_extended(conn, replacements(self._extended_tags, effective), self._person_names)

        if new_rows:
            rows = [{**row, "created_at": now, "updated_at": now} for row in new_rows.values()]
            conn.execute(sa.insert(schema.instance), rows)
        if replaced_rows:
            self._replace_instances(conn, list(replaced_rows.values()), now)
        outbox_rows = [
            {
                "tenant_id": event.tenant_id,
                "topic": INSTANCE_STORED,
                "key": event.key,
                "payload": event.to_json(),
                "created_at": now,
            }
            for event in events
        ]
        conn.execute(sa.insert(schema.outbox), outbox_rows)
        return outcomes

    def _existing_instances(self, conn: Connection, writes: Sequence[InstanceWrite]) -> set[_Key]:
        by_tenant: dict[str, set[str]] = {}
        for write in writes:
            record = write.extracted.instance
            by_tenant.setdefault(record.tenant_id, set()).add(record.sop_instance_uid)
        found: set[_Key] = set()
        for tenant_id, uids in by_tenant.items():
            for chunk in _chunks(sorted(uids), 1000):
                result = conn.execute(_EXISTING_INSTANCES, {"tenant_id": tenant_id, "uids": chunk})
                found.update((tenant_id, uid) for uid in result.scalars())
        return found

    def _upsert_levels(
        self, conn: Connection, extracted: Sequence[ExtractedInstance], now: datetime
    ) -> None:
        patients: dict[_Key, dict[str, Any]] = {}
        studies: dict[_Key, dict[str, Any]] = {}
        series: dict[_Key, dict[str, Any]] = {}
        for item in extracted:
            p, st, se = item.patient, item.study, item.series
            key = (p.tenant_id, p.patient_id)
            patients[key] = _merge(patients.get(key), _as_row(p, PATIENT_FIELDS))
            key = (st.tenant_id, st.study_instance_uid)
            studies[key] = _merge(studies.get(key), _as_row(st, STUDY_FIELDS))
            key = (se.tenant_id, se.series_instance_uid)
            if key not in series:  # the first write fixes the parent, as if sequential
                series[key] = _as_row(se, SERIES_FIELDS)
            elif series[key]["study_instance_uid"] == se.study_instance_uid:
                series[key] = _merge(series[key], _as_row(se, SERIES_FIELDS))
            else:
                raise _series_conflict(se, series[key]["study_instance_uid"])
        # Sorted keys: concurrent batches lock rows in the same order (fewer deadlocks).
        for table, rows in (
            (schema.patient, patients),
            (schema.study, studies),
            (schema.series, series),
        ):
            data = [{**rows[key], "created_at": now, "updated_at": now} for key in sorted(rows)]
            conn.execute(self._upserts[table.name], data)

    def _upsert(self, table: sa.Table, fixed: Sequence[str] = ()) -> sa.Executable:
        """INSERT, or on a key conflict keep the stored value where the new one is NULL
        (the newest instance's non-null attributes win)."""
        keys = [c.name for c in table.primary_key.columns]
        skip = {*keys, *fixed, "created_at"}
        columns = [c.name for c in table.columns if c.name not in skip]

        def assignments(new: Any) -> dict[str, Any]:
            values: dict[str, Any] = {}
            for name in columns:
                incoming = new[name]
                if name == "patient_id":  # an instance without PatientID keeps the link
                    # a literal, not a bound parameter: pymysql's executemany folding
                    # cannot bind parameters after VALUES (...)
                    incoming = sa.func.nullif(incoming, sa.literal_column("''"))
                values[name] = (
                    new[name] if name == "updated_at" else sa.func.coalesce(incoming, table.c[name])
                )
            return values

        if self._dialect in ("mysql", "mariadb"):
            my = mysql.insert(table)
            return my.on_duplicate_key_update(assignments(my.inserted))
        if self._dialect == "postgresql":
            pg = postgresql.insert(table)
            return pg.on_conflict_do_update(index_elements=keys, set_=assignments(pg.excluded))
        lite = sqlite.insert(table)
        return lite.on_conflict_do_update(index_elements=keys, set_=assignments(lite.excluded))

    def _check_series_parents(
        self, conn: Connection, extracted: Sequence[ExtractedInstance]
    ) -> None:
        """Raise IdentityConflict if a series of the batch belongs to another study.

        Runs after the upsert, which locked the series rows, so a concurrent batch
        cannot slip a series under another study in between.
        """
        wanted: dict[_Key, SeriesRecord] = {}
        for item in extracted:
            wanted.setdefault((item.series.tenant_id, item.series.series_instance_uid), item.series)
        by_tenant: dict[str, list[str]] = {}
        for tenant_id, uid in sorted(wanted):
            by_tenant.setdefault(tenant_id, []).append(uid)
        for tenant_id, uids in by_tenant.items():
            for chunk in _chunks(uids, 1000):
                result = conn.execute(_SERIES_PARENTS, {"tenant_id": tenant_id, "uids": chunk})
                for series_uid, study_uid in result:
                    record = wanted[(tenant_id, series_uid)]
                    if record.study_instance_uid != study_uid:
                        raise _series_conflict(record, study_uid)

    def _replace_instances(
        self, conn: Connection, rows: list[dict[str, Any]], now: datetime
    ) -> None:
        table = schema.instance
        statement = sa.update(table).where(
            table.c.tenant_id == sa.bindparam("b_tenant_id"),
            table.c.sop_instance_uid == sa.bindparam("b_sop_instance_uid"),
        )
        params = []
        for row in rows:
            values = {k: v for k, v in row.items() if k not in ("tenant_id", "sop_instance_uid")}
            values["updated_at"] = now
            values["b_tenant_id"] = row["tenant_id"]
            values["b_sop_instance_uid"] = row["sop_instance_uid"]
            params.append(values)
        conn.execute(statement, params)

    async def delete_instances(self, request: DeleteRequest) -> Deletion | None:
        def work(conn: Connection) -> Deletion | None:
            return _delete(conn, request)

        what = f"deleting from study {request.study_instance_uid}"
        return await self._runner.run(work, write=True, what=what)

    async def mark_published(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        table = schema.outbox

        def work(conn: Connection) -> None:
            for chunk in _chunks(sorted(set(ids)), 1000):
                conn.execute(sa.delete(table).where(table.c.id.in_(chunk)))

        await self._runner.run(work, write=True, what="marking outbox published")

    # --- reads --------------------------------------------------------------------------

    async def get_instance(self, tenant_id: str, sop_instance_uid: str) -> InstanceRecord | None:
        def work(conn: Connection) -> InstanceRecord | None:
            result = conn.execute(
                _INSTANCE, {"tenant_id": tenant_id, "sop_instance_uid": sop_instance_uid}
            )
            row = result.mappings().first()
            return None if row is None else instance_record(row)

        return await self._runner.run(work, what="reading an instance")

    async def list_instances(
        self,
        tenant_id: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
    ) -> list[InstanceRecord]:
        """The instances of a study (or of one of its series), in series and
        InstanceNumber order."""
        table = schema.instance
        query = sa.select(*(table.c[name] for name in INSTANCE_READ)).where(
            table.c.tenant_id == tenant_id, table.c.study_instance_uid == study_instance_uid
        )
        if series_instance_uid is not None:
            query = query.where(table.c.series_instance_uid == series_instance_uid)

        def work(conn: Connection) -> list[InstanceRecord]:
            result = conn.execute(query)
            return ordered(instance_record(row) for row in result.mappings())

        return await self._runner.run(work, what="listing instances")

    async def count_instances(self, tenant_id: str) -> int:
        """How many instances the tenant has."""
        table = schema.instance
        query = sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == tenant_id)

        def work(conn: Connection) -> int:
            return int(conn.execute(query).scalar_one())

        return await self._runner.run(work, what="counting instances")

    async def count_levels(self, tenant_id: str) -> LevelCounts:
        """How many studies, series and instances the tenant has (three index-only
        counts on the tenant-leading primary keys)."""
        queries = [
            sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == tenant_id)
            for table in (schema.study, schema.series, schema.instance)
        ]

        def work(conn: Connection) -> LevelCounts:
            studies, series, instances = (int(conn.execute(q).scalar_one()) for q in queries)
            return LevelCounts(studies, series, instances)

        return await self._runner.run(work, what="counting studies, series and instances")

    async def series_blob_keys(
        self, tenant_id: str, series_instance_uids: Sequence[str]
    ) -> dict[str, set[str]]:
        """The blob keys of these series' instances and viewer-ready copies, by series
        (only series that hold instances); two statements on the tenant-leading
        indexes."""
        instance, copy = schema.instance, schema.derived_copy
        wanted = sorted(set(series_instance_uids))
        if not wanted:
            return {}
        originals = sa.select(instance.c.series_instance_uid, instance.c.blob_key).where(
            instance.c.tenant_id == tenant_id, instance.c.series_instance_uid.in_(wanted)
        )
        copies = sa.select(copy.c.series_instance_uid, copy.c.blob_key).where(
            copy.c.tenant_id == tenant_id, copy.c.series_instance_uid.in_(wanted)
        )

        def work(conn: Connection) -> dict[str, set[str]]:
            found: dict[str, set[str]] = {}
            for series_uid, key in conn.execute(originals):
                found.setdefault(series_uid, set()).add(key)
            for series_uid, key in conn.execute(copies):
                if series_uid in found:
                    found[series_uid].add(key)
            return found

        return await self._runner.run(work, what="listing referenced blob keys")

    async def count_all_instances(self) -> int:
        """How many instances the index holds, all tenants together."""
        query = sa.select(sa.func.count()).select_from(schema.instance)

        def work(conn: Connection) -> int:
            return int(conn.execute(query).scalar_one())

        return await self._runner.run(work, what="counting instances")

    async def instance_page(
        self, after: tuple[str, str] | None, limit: int
    ) -> list[InstanceRecord]:
        """Up to ``limit`` instances after ``(tenant, SOP Instance UID)`` in that order
        (keyset paging over the primary key, for ``dicomcloud reindex``)."""
        table = schema.instance
        tenant, uid = table.c.tenant_id, self._code_points(table.c.sop_instance_uid)
        query = sa.select(*(table.c[name] for name in INSTANCE_READ))
        if after is not None:
            query = query.where(
                sa.or_(tenant > after[0], sa.and_(tenant == after[0], uid > after[1]))
            )
        query = query.order_by(self._code_points(tenant), uid).limit(limit)

        def work(conn: Connection) -> list[InstanceRecord]:
            return [instance_record(row) for row in conn.execute(query).mappings()]

        return await self._runner.run(work, what="listing instances to reindex")

    async def refresh_derived(self, extracted: Sequence[ExtractedInstance]) -> None:
        """Rewrite the derived search columns (``_WRITE_ONLY``) of these instances and
        of their patient, study and series rows, and the values of the extended query
        tags (``dicomcloud reindex`` after a tag was configured); nothing else changes."""
        if not extracted:
            return
        levels = (
            (schema.patient, "patient", ("patient_id",)),
            (schema.study, "study", ("study_instance_uid",)),
            (schema.series, "series", ("series_instance_uid",)),
            (schema.instance, "instance", ("sop_instance_uid",)),
        )
        statements = []
        for table, level, keys in levels:
            derived = [c.name for c in table.columns if c.name in _WRITE_ONLY]
            rows: dict[tuple[str, ...], dict[str, Any]] = {}
            for item in extracted:
                record = getattr(item, level)
                key = (record.tenant_id, *(getattr(record, k) for k in keys))
                rows[key] = {
                    **{f"k_{k}": getattr(record, k) for k in ("tenant_id", *keys)},
                    **{name: getattr(record, name) for name in derived},
                }
            statement = (
                sa.update(table)
                .where(*(table.c[k] == sa.bindparam(f"k_{k}") for k in ("tenant_id", *keys)))
                .values({name: sa.bindparam(name) for name in derived})
            )
            statements.append((statement, [rows[key] for key in sorted(rows)]))

        extended = replacements(self._extended_tags, extracted)

        def work(conn: Connection) -> None:
            for statement, params in statements:
                conn.execute(statement, params)
            _write_extended(conn, extended, self._person_names)

        await self._runner.run(work, write=True, what=f"reindexing {len(extracted)} instance(s)")

    def _code_points(self, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        """``column`` ordered by code point, as on SQLite and MySQL (binary collations)."""
        return sa.collate(column, "C") if self._dialect == "postgresql" else column

    def _search_statement(
        self, tenant_id: str, query: Query, order: Sequence[sa.ColumnElement[Any]]
    ) -> sa.Select[Any]:
        """The page of rows matching ``query``: the searched level's table joined with the
        levels above (the patient outer-joined), every column labelled ``level__name``;
        the tenant is in the WHERE clause and in every join."""
        levels = _SEARCHED_LEVELS[query.level]
        joined: sa.FromClause = TABLES[levels[0]]
        for child, parent in itertools.pairwise(levels):
            if parent == "patient":
                break
            key = f"{parent}_instance_uid"
            joined = joined.join(
                TABLES[parent],
                sa.and_(
                    TABLES[parent].c.tenant_id == TABLES[child].c.tenant_id,
                    TABLES[parent].c[key] == TABLES[child].c[key],
                ),
            )
        study, patient = schema.study, schema.patient
        if query.level is not QueryLevel.PATIENT:
            joined = joined.outerjoin(
                patient,
                sa.and_(
                    patient.c.tenant_id == study.c.tenant_id,
                    patient.c.patient_id == study.c.patient_id,
                ),
            )
        statement = (
            sa.select(
                *(
                    TABLES[level].c[name].label(f"{level}__{name}")
                    for level in levels
                    for name in _read_columns(level, query)
                )
            )
            .select_from(joined)
            .where(
                TABLES[levels[0]].c.tenant_id == tenant_id,
                *query_conditions(query, self._dialect),
            )
            .order_by(*order)
            .offset(query.offset)
        )
        return statement if query.limit is None else statement.limit(query.limit)

    async def _search(
        self,
        tenant_id: str,
        query: Query,
        order: Sequence[sa.ColumnElement[Any]],
        results: Callable[[Connection, list[dict[str, Any]]], list[R]],
    ) -> list[R]:
        statement = self._search_statement(tenant_id, query, order)

        def work(conn: Connection) -> list[R]:
            levels = {level: _read_columns(level, query) for level in _SEARCHED_LEVELS[query.level]}
            rows = [
                {level: _search_record(row, level, names) for level, names in levels.items()}
                for row in conn.execute(statement).mappings()
            ]
            return results(conn, rows)

        return await self._runner.run(work, what=f"searching at the {query.level.value} level")

    async def search_patients(self, tenant_id: str, query: Query) -> list[PatientResult]:
        """Patients of ``tenant_id`` matching ``query`` (PS3.4 C.6.1.1.2), by PatientID;
        the related-object counts are read for the page only."""
        order = (self._code_points(schema.patient.c.patient_id),)

        def results(conn: Connection, rows: list[dict[str, Any]]) -> list[PatientResult]:
            ids = [row["patient"].patient_id for row in rows]
            counts = _patient_counts(conn, tenant_id, ids)
            return [
                PatientResult(row["patient"], *counts.get(row["patient"].patient_id, (0, 0, 0)))
                for row in rows
            ]

        return await self._search(tenant_id, query, order, results)

    async def search_studies(self, tenant_id: str, query: Query) -> list[StudyResult]:
        """Studies of ``tenant_id`` matching ``query`` (PS3.18 10.6), in ``STUDY_ORDER``;
        limit and offset are applied in SQL, the computed attributes are read for the
        page only."""
        study = schema.study
        order = (
            study.c.study_date.is_(None),
            study.c.study_date.desc(),
            self._code_points(study.c.study_instance_uid),
        )

        def results(conn: Connection, rows: list[dict[str, Any]]) -> list[StudyResult]:
            uids = [row["study"].study_instance_uid for row in rows]
            computed = _computed_study_attributes(conn, tenant_id, uids)
            found = []
            for row in rows:
                record = row["study"]
                series_count, instance_count, modalities, classes = computed[
                    record.study_instance_uid
                ]
                found.append(
                    StudyResult(
                        record,
                        row["patient"],
                        series_count,
                        instance_count,
                        tuple(sorted(modalities)),
                        tuple(sorted(classes)),
                    )
                )
            return found

        return await self._search(tenant_id, query, order, results)

    async def search_series(self, tenant_id: str, query: Query) -> list[SeriesResult]:
        """Series of ``tenant_id`` matching ``query``: SeriesNumber (absent last), then
        SeriesInstanceUID; NumberOfSeriesRelatedInstances read for the page only."""
        series = schema.series
        order = (
            series.c.series_number.is_(None),
            series.c.series_number,
            self._code_points(series.c.series_instance_uid),
        )

        def results(conn: Connection, rows: list[dict[str, Any]]) -> list[SeriesResult]:
            counts = _series_instance_counts(
                conn, tenant_id, [row["series"].series_instance_uid for row in rows]
            )
            return [
                SeriesResult(
                    row["series"],
                    row["study"],
                    row["patient"],
                    counts.get(row["series"].series_instance_uid, 0),
                )
                for row in rows
            ]

        return await self._search(tenant_id, query, order, results)

    async def search_instances(self, tenant_id: str, query: Query) -> list[InstanceResult]:
        """Instances of ``tenant_id`` matching ``query``: InstanceNumber (absent last),
        then SOPInstanceUID."""
        instance = schema.instance
        order = (
            instance.c.instance_number.is_(None),
            instance.c.instance_number,
            self._code_points(instance.c.sop_instance_uid),
        )

        def results(conn: Connection, rows: list[dict[str, Any]]) -> list[InstanceResult]:
            return [
                InstanceResult(row["instance"], row["series"], row["study"], row["patient"])
                for row in rows
            ]

        return await self._search(tenant_id, query, order, results)

    async def fetch_outbox(self, limit: int) -> list[OutboxMessage]:
        table = schema.outbox
        query = (
            sa.select(table.c.id, table.c.topic, table.c.key, table.c.payload)
            .order_by(table.c.id)
            .limit(limit)
        )

        def work(conn: Connection) -> list[OutboxMessage]:
            result = conn.execute(query)
            return [
                OutboxMessage(id=int(i), topic=topic, key=key, payload=payload)
                for i, topic, key, payload in result
            ]

        return await self._runner.run(work, what="reading the outbox")

    async def ping(self) -> None:
        def work(conn: Connection) -> None:
            conn.execute(sa.text("SELECT 1"))

        await self._runner.run(work, what="ping")

    async def close(self) -> None:
        await self._runner.close()
        await self._engine.dispose()


_Computed = tuple[int, int, set[str], set[str]]


def _write_extended(conn: Connection, found: Replacements, person_names: frozenset[str]) -> None:
    """Replace the stored values of extended query tags (one row per value); the values
    of the tags in ``person_names`` (PN) are also stored folded for fuzzy matching."""
    if not found:
        return
    table = schema.extended_tag_value
    keys = ("tenant_id", "level", "uid", "tag")
    delete = sa.delete(table).where(*(table.c[k] == sa.bindparam(f"b_{k}") for k in keys))
    ordered_keys = sorted(found)
    conn.execute(
        delete, [dict(zip((f"b_{k}" for k in keys), key, strict=True)) for key in ordered_keys]
    )
    rows = [
        {
            **dict(zip(keys, key, strict=True)),
            "value_string": str(value),
            "value_number": value if isinstance(value, int) else None,
            "value_folded": folded_value(str(value)) if key[3] in person_names else None,
        }
        for key in ordered_keys
        for value in found[key]
    ]
    if rows:
        conn.execute(sa.insert(table), rows)


def _delete(conn: Connection, request: DeleteRequest) -> Deletion | None:
    """One deletion (``Index.delete_instances``) on ``conn``.

    Rows are locked top down as a store locks them (patient, study, series, then the
    instances): a concurrent store into the same study either committed before, and
    its instance is seen and deleted, or waits and then writes its levels anew.
    Locking reads also see the latest committed rows on MySQL/MariaDB.
    """
    tenant, study_uid = request.tenant_id, request.study_instance_uid
    st, se, inst = schema.study, schema.series, schema.instance
    found = conn.execute(
        sa.select(st.c.patient_id).where(
            st.c.tenant_id == tenant, st.c.study_instance_uid == study_uid
        )
    ).first()
    if found is None:
        return None
    patient_id = str(found.patient_id)
    pa = schema.patient
    conn.execute(
        sa.select(pa.c.patient_id)
        .where(pa.c.tenant_id == tenant, pa.c.patient_id == patient_id)
        .with_for_update()
    ).all()
    conn.execute(
        sa.select(st.c.study_instance_uid)
        .where(st.c.tenant_id == tenant, st.c.study_instance_uid == study_uid)
        .with_for_update()
    ).all()
    series_lock = sa.select(se.c.series_instance_uid).where(
        se.c.tenant_id == tenant, se.c.study_instance_uid == study_uid
    )
    wanted = sa.select(*(inst.c[name] for name in INSTANCE_READ)).where(
        inst.c.tenant_id == tenant, inst.c.study_instance_uid == study_uid
    )
    if request.series_instance_uid is not None:
        series_lock = series_lock.where(se.c.series_instance_uid == request.series_instance_uid)
        wanted = wanted.where(inst.c.series_instance_uid == request.series_instance_uid)
    if request.sop_instance_uid is not None:
        wanted = wanted.where(inst.c.sop_instance_uid == request.sop_instance_uid)
    conn.execute(series_lock.order_by(se.c.series_instance_uid).with_for_update()).all()
    records = ordered(
        instance_record(row) for row in conn.execute(wanted.with_for_update()).mappings()
    )
    if not records:
        return None
    sops = sorted({r.sop_instance_uid for r in records})
    touched = sorted({r.series_instance_uid for r in records})
    copy, failure = schema.derived_copy, schema.transcode_failure
    derived: list[str] = []
    for chunk in _chunks(sops, 1000):
        derived += conn.execute(
            sa.select(copy.c.blob_key).where(
                copy.c.tenant_id == tenant, copy.c.sop_instance_uid.in_(chunk)
            )
        ).scalars()
        for table in (copy, failure, inst):
            conn.execute(
                sa.delete(table).where(
                    table.c.tenant_id == tenant, table.c.sop_instance_uid.in_(chunk)
                )
            )
        _delete_extended(conn, tenant, "instance", chunk)
    still = set(
        conn.execute(
            sa.select(inst.c.series_instance_uid)
            .where(inst.c.tenant_id == tenant, inst.c.series_instance_uid.in_(touched))
            .distinct()
        ).scalars()
    )
    removed_series = [uid for uid in touched if uid not in still]
    left_in_study = conn.execute(
        sa.select(inst.c.sop_instance_uid)
        .where(inst.c.tenant_id == tenant, inst.c.study_instance_uid == study_uid)
        .limit(1)
    ).first()
    study_removed = left_in_study is None
    if study_removed:  # every series of the study is empty now
        removed_series = sorted(
            {*removed_series, *conn.execute(series_lock.with_for_update()).scalars()}
        )
    if removed_series:
        conn.execute(
            sa.delete(se).where(
                se.c.tenant_id == tenant, se.c.series_instance_uid.in_(removed_series)
            )
        )
        _delete_extended(conn, tenant, "series", removed_series)
    patient_removed = False
    if study_removed:
        conn.execute(
            sa.delete(st).where(st.c.tenant_id == tenant, st.c.study_instance_uid == study_uid)
        )
        _delete_extended(conn, tenant, "study", [study_uid])
        other = conn.execute(
            sa.select(st.c.study_instance_uid)
            .where(st.c.tenant_id == tenant, st.c.patient_id == patient_id)
            .limit(1)
        ).first()
        if other is None:
            conn.execute(
                sa.delete(pa).where(pa.c.tenant_id == tenant, pa.c.patient_id == patient_id)
            )
            patient_removed = True
    events = deleted_events(
        records,
        patient_id=patient_id,
        removed_series=removed_series,
        study_removed=study_removed,
        source=request.source,
        principal=request.principal,
    )
    now = datetime.now(UTC)
    conn.execute(
        sa.insert(schema.outbox),
        [
            {
                "tenant_id": tenant,
                "topic": INSTANCE_DELETED,
                "key": event.key,
                "payload": event.to_json(),
                "created_at": now,
            }
            for event in events
        ],
    )
    return Deletion(
        instances=tuple(records),
        removed_series=tuple(removed_series),
        study_removed=study_removed,
        patient_id=patient_id,
        patient_removed=patient_removed,
        derived_blob_keys=tuple(derived),
    )


def _delete_extended(conn: Connection, tenant: str, level: str, uids: Sequence[str]) -> None:
    """Remove the extended query tag values of these records of ``level``."""
    table = schema.extended_tag_value
    conn.execute(
        sa.delete(table).where(
            table.c.tenant_id == tenant, table.c.level == level, table.c.uid.in_(uids)
        )
    )


def _read_columns(level: str, query: Query) -> tuple[str, ...]:
    """The columns of ``level`` a search reads."""
    return tuple(
        name
        for name in _LEVEL_COLUMNS[level]
        if name not in _WRITE_ONLY or (name == "attributes" and query.with_attributes)
    )


def _search_record(row: Mapping[Any, Any], level: str, names: Sequence[str]) -> Any:
    """The record of ``level`` in a joined search row (None: no patient row)."""
    if level == "patient" and row["patient__patient_id"] is None:
        return None
    return _RECORD_TYPES[level](**{n: row[f"{level}__{n}"] for n in names})


def _patient_counts(
    conn: Connection, tenant_id: str, patient_ids: Sequence[str]
) -> dict[str, tuple[int, int, int]]:
    """NumberOfPatientRelatedStudies, -Series and -Instances (PS3.4 C.3.2) of each
    patient: three grouped counts over the study index, for the page only."""
    study, series, instance = schema.study, schema.series, schema.instance
    found: dict[str, list[int]] = {pid: [0, 0, 0] for pid in patient_ids}
    for chunk in _chunks(sorted(found), 1000):
        for position, child in enumerate((None, series, instance)):
            statement = sa.select(study.c.patient_id, sa.func.count()).where(
                study.c.tenant_id == tenant_id, study.c.patient_id.in_(chunk)
            )
            if child is not None:
                statement = statement.join(
                    child,
                    sa.and_(
                        child.c.tenant_id == study.c.tenant_id,
                        child.c.study_instance_uid == study.c.study_instance_uid,
                    ),
                )
            for patient_id, number in conn.execute(statement.group_by(study.c.patient_id)):
                found[patient_id][position] = int(number)
    return {pid: (c[0], c[1], c[2]) for pid, c in found.items()}


def _series_instance_counts(
    conn: Connection, tenant_id: str, series_uids: Sequence[str]
) -> dict[str, int]:
    """NumberOfSeriesRelatedInstances (PS3.18 table 10.6.3-4) of each series."""
    instance = schema.instance
    counts: dict[str, int] = {}
    for chunk in _chunks(sorted(set(series_uids)), 1000):
        result = conn.execute(
            sa.select(instance.c.series_instance_uid, sa.func.count())
            .where(instance.c.tenant_id == tenant_id, instance.c.series_instance_uid.in_(chunk))
            .group_by(instance.c.series_instance_uid)
        )
        counts.update((uid, int(number)) for uid, number in result)
    return counts


def _computed_study_attributes(
    conn: Connection, tenant_id: str, study_uids: Sequence[str]
) -> dict[str, _Computed]:
    """NumberOfStudyRelatedSeries, NumberOfStudyRelatedInstances, ModalitiesInStudy and
    SOPClassesInStudy (PS3.18 table 10.6.3-3) of each study, from its series and
    instances."""
    found: dict[str, _Computed] = {uid: (0, 0, set(), set()) for uid in study_uids}
    series, instance = schema.series, schema.instance
    for chunk in _chunks(sorted(found), 1000):
        series_rows = conn.execute(
            sa.select(series.c.study_instance_uid, series.c.modality).where(
                series.c.tenant_id == tenant_id, series.c.study_instance_uid.in_(chunk)
            )
        )
        for uid, modality in series_rows:
            count, instances, modalities, classes = found[uid]
            if modality:
                modalities.add(modality)
            found[uid] = (count + 1, instances, modalities, classes)
        instance_rows = conn.execute(
            sa.select(instance.c.study_instance_uid, instance.c.sop_class_uid, sa.func.count())
            .where(instance.c.tenant_id == tenant_id, instance.c.study_instance_uid.in_(chunk))
            .group_by(instance.c.study_instance_uid, instance.c.sop_class_uid)
        )
        for uid, sop_class, number in instance_rows:
            count, instances, modalities, classes = found[uid]
            classes.add(sop_class)
            found[uid] = (count, instances + int(number), modalities, classes)
    return found


def _series_conflict(series: SeriesRecord, stored_study_uid: str) -> IdentityConflict:
    return IdentityConflict(
        f"series {series.series_instance_uid} belongs to study {stored_study_uid}, "
        f"not to study {series.study_instance_uid}"
    )
