"""``dicomcloud reindex`` as a user runs it after upgrading: rows without the search
columns of migration 0002 (stored before it, or bulk-loaded) get them from the stored
files, and QIDO-RS includefield and fuzzy matching find what they should."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file

from dicomcloud.domain.query import QueryLevel, parse_qido
from dicomcloud.index.sql_index import SqlIndex
from dicomcloud.services.query import (
    INSTANCE_SEARCH_KEYS,
    SERIES_SEARCH_KEYS,
    STUDY_SEARCH_KEYS,
)
from integration.test_cli import run

FILES = [
    Path(str(get_testdata_file("CT_small.dcm"))),
    *(Path(p) for p in get_charset_files("chrFren.dcm")),
    *(Path(p) for p in get_charset_files("chrH32.dcm")),
]


def _forget_derived_columns(data_dir: Path) -> None:
    """What an index written before migration 0002 looks like."""
    with sqlite3.connect(data_dir / "index.sqlite3") as conn:
        conn.execute("UPDATE patient SET attributes = NULL, patient_name_fuzzy = NULL")
        conn.execute("UPDATE study SET attributes = NULL, referring_physician_name_fuzzy = NULL")
        conn.execute("UPDATE series SET attributes = NULL")
        conn.execute("UPDATE instance SET attributes = NULL")


async def _search(data_dir: Path) -> tuple[set[str], str | None]:
    index = SqlIndex.from_url(f"sqlite:///{data_dir / 'index.sqlite3'}")
    try:
        params = [("PatientName", "ヤマダ*"), ("fuzzymatching", "true")]
        fuzzy = parse_qido(QueryLevel.STUDY, params, known=STUDY_SEARCH_KEYS)
        found = {r.study.patient_id for r in await index.search_studies("default", fuzzy)}
        params = [("includefield", "all"), ("Modality", "CT")]
        series = parse_qido(QueryLevel.SERIES, params, known=SERIES_SEARCH_KEYS)
        (ct,) = await index.search_series(
            "default", dataclasses.replace(series, with_attributes=True)
        )
        return found, ct.series.attributes
    finally:
        await index.close()


def test_reindex_fills_the_search_columns(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    imported = run("import", "--data-dir", str(data_dir), *map(str, FILES), cwd=tmp_path)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    _forget_derived_columns(data_dir)
    before, attributes = asyncio.run(_search(data_dir))
    assert attributes is None
    assert before == set()  # lower() alone does not fold width nor voicing marks

    result = run("reindex", "--data-dir", str(data_dir), "--batch", "2", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "reindexed 3 instance(s)" in result.stdout
    after, attributes = asyncio.run(_search(data_dir))
    assert after == {"H32EXAMPLE"}
    assert attributes is not None and '"00080070"' in attributes  # Manufacturer


def test_reindex_reports_a_missing_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    imported = run("import", "--data-dir", str(data_dir), str(FILES[1]), cwd=tmp_path)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    for path in (data_dir / "blobs").rglob("*.dcm"):
        path.unlink()

    result = run("reindex", "--data-dir", str(data_dir), cwd=tmp_path)

    assert result.returncode == 1
    assert "not found" in result.stderr


EXTENDED_CONFIG = """
[[search.extended_query_tags]]
tag = "00091004"
private_creator = "GEMS_IDEN_01"
vr = "SH"
level = "instance"

[[search.extended_query_tags]]
tag = "Manufacturer"
level = "series"
"""


async def _extended_search(data_dir: Path, config: Path) -> tuple[list[str], list[str]]:
    from dicomcloud.config import load_settings

    tags = load_settings(config, data_dir=data_dir).search.extended_tags()
    index = SqlIndex.from_url(f"sqlite:///{data_dir / 'index.sqlite3'}", tags)
    try:
        params = [("00091004", "HiSpeed*")]
        private = parse_qido(QueryLevel.IMAGE, params, known=INSTANCE_SEARCH_KEYS, extended=tags)
        instances = await index.search_instances("default", private)
        params = [("Manufacturer", "GE MEDICAL SYSTEMS")]
        public = parse_qido(QueryLevel.SERIES, params, known=SERIES_SEARCH_KEYS, extended=tags)
        series = await index.search_series("default", public)
        return (
            [r.instance.sop_instance_uid for r in instances],
            [r.series.series_instance_uid for r in series],
        )
    finally:
        await index.close()


def test_reindex_fills_extended_query_tags_configured_later(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    imported = run("import", "--data-dir", str(data_dir), *map(str, FILES), cwd=tmp_path)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    config = tmp_path / "dicomcloud.toml"
    config.write_text(EXTENDED_CONFIG)
    ct = dcmread(FILES[0], stop_before_pixels=True)
    assert asyncio.run(_extended_search(data_dir, config)) == ([], [])  # stored before

    result = run("reindex", "--config", str(config), "--data-dir", str(data_dir), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert asyncio.run(_extended_search(data_dir, config)) == (
        [ct.SOPInstanceUID],
        [ct.SeriesInstanceUID],
    )


def test_reindex_names_a_bad_extended_query_tag(tmp_path: Path) -> None:
    config = tmp_path / "dicomcloud.toml"
    config.write_text('[[search.extended_query_tags]]\ntag = "00091004"\nlevel = "instance"\n')

    result = run("reindex", "--config", str(config), "--data-dir", str(tmp_path), cwd=tmp_path)

    assert result.returncode != 0
    assert "search.extended_query_tags.0" in result.stderr + result.stdout
    assert "vr is required" in result.stderr + result.stdout
