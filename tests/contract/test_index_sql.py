"""What only the SQL backends have: URLs, engines, migrations and the stored level rows."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

import backends
from dicomcloud.domain.records import DuplicatePolicy, StoreOutcome
from dicomcloud.errors import ConfigurationError, IndexUnavailable
from dicomcloud.index import SqlIndex, create_engine_for, migrate, schema
from dicomcloud.index.unit_of_work import SqliteRunner

from .records import SERIES, STUDY, sop_uid, write
from .sqlite_writer import store_singles


@pytest.mark.parametrize("url", ["oracle://scott@db/x", "mongodb://h/x", "index.db"])
def test_unknown_scheme_is_a_configuration_error(url: str) -> None:
    scheme = url.split("://")[0] if "://" in url else "(none)"

    with pytest.raises(ConfigurationError, match=scheme.replace("(", r"\(").replace(")", r"\)")):
        create_engine_for(url)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="MemoryIndex"):
        create_engine_for(url)


async def test_sqlite_connections_are_durable(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        async with engine.connect() as conn:
            pragmas = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()

    assert pragmas["journal_mode"] == "wal"
    assert pragmas["synchronous"] == 2  # FULL
    assert pragmas["foreign_keys"] == 1
    assert int(pragmas["busy_timeout"] or 0) >= 1000


async def test_sqlite_index_transactions_are_durable_too(tmp_path: Path) -> None:
    index = SqlIndex.from_url(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        await index.migrate()
        await index.store_instances([write(sop_uid(1))])
        runner = index.runner
        assert isinstance(runner, SqliteRunner)
        with runner.engine.connect() as conn:
            pragmas = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        await index.close()

    assert pragmas["journal_mode"] == "wal"
    assert pragmas["synchronous"] == 2  # FULL
    assert pragmas["foreign_keys"] == 1
    assert int(pragmas["busy_timeout"] or 0) >= 1000
    assert runner.lock_path == tmp_path / "x.db.write-lock"
    assert runner.lock_path.exists()


async def test_two_sqlite_indexes_in_one_process_share_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    await migrate(url)
    first, second = SqlIndex.from_url(url), SqlIndex.from_url(url)

    async def client(index: SqlIndex, series: str) -> None:
        for n in range(40):
            await index.store_instances([write(sop_uid(n, series), series=series)])

    try:
        await asyncio.gather(client(first, f"{SERIES}1"), client(second, f"{SERIES}2"))
        assert await first.count_instances("t1") == 80
    finally:
        await first.close()
        await second.close()


def test_two_processes_write_one_sqlite_file_concurrently(tmp_path: Path) -> None:
    """Server workers share one SQLite file: their writers queue on the write lock, and
    no transaction fails with "database is locked"."""
    database = tmp_path / "x.db"
    url = f"sqlite:///{database}"
    asyncio.run(migrate(url))
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    report: Queue[str] = context.Queue()
    count = 100
    processes = [
        context.Process(target=store_singles, args=(url, f"{SERIES}{p}", count, start, report))
        for p in range(2)
    ]
    for process in processes:
        process.start()
    try:
        start.set()
        outcomes = [report.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()

    assert outcomes == ["ok", "ok"]
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT series_instance_uid, count(*) FROM instance GROUP BY 1"
        ).fetchall()
    assert sorted(rows) == [(f"{SERIES}0", count), (f"{SERIES}1", count)]


async def test_unreachable_database_is_index_unavailable() -> None:
    index = SqlIndex.from_url("postgresql://postgres@127.0.0.1:1/nothing")
    try:
        with pytest.raises(IndexUnavailable):
            await index.ping()
    finally:
        await index.close()


async def test_migrate_twice_is_harmless(sql_url: str) -> None:
    await migrate(sql_url)
    index = SqlIndex.from_url(sql_url)
    try:
        await index.store_instances([write(sop_uid(1))])

        await migrate(sql_url)
        await index.migrate()

        assert await index.count_instances("t1") == 1
    finally:
        await index.close()


#: Expression indexes that only the migrations create (Alembic cannot compare them).
EXPRESSION_INDEXES = {"ix_study_list_order"}


def _not_an_expression_index(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    return not (type_ == "index" and name in EXPRESSION_INDEXES)


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "include_object": _not_an_expression_index},
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        return list(compare_metadata(context, schema.metadata))


def _index_names(connection: Connection) -> set[str]:
    names: set[str] = set()
    inspector = sa.inspect(connection)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        for table in ("study", "series"):
            names.update(str(ix["name"]) for ix in inspector.get_indexes(table))
    if connection.dialect.name == "sqlite":  # SQLite does not reflect expression indexes
        rows = connection.execute(sa.text("SELECT name FROM sqlite_master WHERE type='index'"))
        names.update(row[0] for row in rows)
    return names


async def test_migrations_create_exactly_schema_py(sql_url: str) -> None:
    await migrate(sql_url)
    engine = create_engine_for(sql_url)
    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(_differences)
            indexes = await conn.run_sync(_index_names)
    finally:
        await engine.dispose()

    assert differences == []
    assert "ix_series_tenant_id_study_instance_uid_modality" in indexes
    # The study-list order index exists where the database can express it.
    assert ("ix_study_list_order" in indexes) == (not sql_url.startswith("mysql"))


@pytest.mark.backend
async def test_mysql_connections_speak_utf8mb4(tmp_path: Path) -> None:
    async with backends.database_url("mysql", tmp_path) as url:
        engine = create_engine_for(url)
        try:
            async with engine.connect() as conn:
                charset = (await conn.exec_driver_sql("SELECT @@character_set_client")).scalar()
        finally:
            await engine.dispose()

    assert charset == "utf8mb4"


async def test_newest_non_null_level_attributes_win(sql_url: str) -> None:
    await migrate(sql_url)
    index = SqlIndex.from_url(sql_url)
    first = write(
        sop_uid(1),
        study_attrs={
            "study_description": "first",
            "accession_number": "A1",
            "study_date": "20240101",
        },
        series_attrs={"modality": "CT", "series_number": 1},
        patient={"patient_name": "Doe^John", "patient_sex": "M"},
    )
    second = write(
        sop_uid(2),
        study_attrs={"study_description": None, "accession_number": "A2"},
        series_attrs={"modality": None, "series_description": "axial"},
        patient={"patient_name": "Doe^Jane"},
    )
    duplicate = write(
        sop_uid(1),
        policy=DuplicatePolicy.KEEP_FIRST,
        study_attrs={"study_description": "ignored", "accession_number": "IGN"},
    )
    no_patient_id = write(sop_uid(3), patient_id="")
    try:
        await index.store_instances([first])
        assert await index.store_instances([second, duplicate]) == [
            StoreOutcome.STORED,
            StoreOutcome.DUPLICATE,
        ]
        await index.store_instances([no_patient_id])

        async with index.engine.connect() as conn:
            study = (await conn.execute(sa.select(schema.study))).mappings().one()
            series = (await conn.execute(sa.select(schema.series))).mappings().one()
            patients = (
                (await conn.execute(sa.select(schema.patient).order_by("patient_id")))
                .mappings()
                .all()
            )
    finally:
        await index.close()

    assert study["study_instance_uid"] == STUDY
    assert study["study_description"] == "first"
    assert study["accession_number"] == "A2"
    assert study["study_date"] == "20240101"
    assert study["patient_id"] == "PAT-1"
    assert study["updated_at"] >= study["created_at"]
    assert (series["modality"], series["series_number"], series["series_description"]) == (
        "CT",
        1,
        "axial",
    )
    assert [(p["patient_id"], p["patient_name"], p["patient_sex"]) for p in patients] == [
        ("", None, None),
        ("PAT-1", "Doe^Jane", "M"),
    ]


async def test_sqlite_gets_planner_statistics(tmp_path: Path) -> None:
    """Without statistics SQLite walks the study-list index for a PatientID search
    (docs/performance.md): a start on a database without them (a bulk load, an older
    version) analyses it; the writer refreshes them as the index grows."""
    url = f"sqlite:///{tmp_path / 'index.db'}"
    await migrate(url)
    index = SqlIndex.from_url(url)
    try:
        await index.store_instances([write(sop_uid(n)) for n in range(1, 4)])
    finally:
        await index.close()

    await migrate(url)  # what every start does

    with sqlite3.connect(tmp_path / "index.db") as conn:
        analysed = {row[0] for row in conn.execute("SELECT tbl FROM sqlite_stat1")}
    assert {"study", "series", "instance"} <= analysed


async def test_sqlite_writer_refreshes_statistics_as_the_index_grows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    await migrate(url)
    engine = create_engine_for(url)
    runner = SqliteRunner(engine)
    runner._analyze_at = 3  # instead of FIRST_ANALYZE_AFTER_WRITES

    def insert(n: int) -> Callable[[Connection], None]:
        def work(conn: Connection) -> None:
            conn.execute(
                sa.insert(schema.study).values(
                    tenant_id="t1", study_instance_uid=f"1.2.{n}", patient_id=f"P{n}",
                    created_at=datetime.now(UTC), updated_at=datetime.now(UTC),
                )
            )  # fmt: skip

        return work

    def statistics() -> list[tuple[str, str]]:
        with sqlite3.connect(tmp_path / "index.db") as conn:
            return conn.execute("SELECT idx, stat FROM sqlite_stat1 WHERE tbl='study'").fetchall()

    try:
        for n in range(1, 3):
            await runner.run(insert(n), write=True)
        before = statistics()
        await runner.run(insert(3), write=True)
        after = statistics()
    finally:
        await runner.close()
        await engine.dispose()

    assert before == []
    assert ("ix_study_tenant_id_patient_id", "3 3 1") in after
