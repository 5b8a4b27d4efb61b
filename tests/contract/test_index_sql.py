"""What only the SQL backends have: URLs, engines, migrations and the stored level rows."""

from __future__ import annotations

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

from .records import STUDY, sop_uid, write


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


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, schema.metadata))


async def test_migrations_create_exactly_schema_py(sql_url: str) -> None:
    await migrate(sql_url)
    engine = create_engine_for(sql_url)
    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(_differences)
    finally:
        await engine.dispose()

    assert differences == []


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
