"""Person names (PN) configured as extended query tags match as PatientName does
(PS3.4 C.2.2.2.6): exactly as typed by default, with case, accents and width folded
under QIDO-RS ``fuzzymatching=true`` (PS3.18 8.3.4.5) or on a C-FIND association that
negotiated fuzzy semantic matching (PS3.4 C.5.1.1.1); ``dicomcloud reindex`` fills the
folded copies of values stored before migration 0008."""

from __future__ import annotations

import asyncio
import sqlite3
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset

from conftest import ArchiveFactory, dimse_for
from dicomcloud.config import load_settings
from dicomcloud.domain.query import QueryLevel, parse_qido
from dicomcloud.index.sql_index import SqlIndex
from dicomcloud.services.query import SERIES_SEARCH_KEYS
from integration.test_cli import run
from integration.test_dimse_find import SUCCESS, c_find_fuzzy, identifier

pytestmark = pytest.mark.timeout(90)

CT_SMALL = Path(str(get_testdata_file("CT_small.dcm")))
CT = dcmread(CT_SMALL, stop_before_pixels=True)
OBSERVER = "VerifyingObserverSequence.VerifyingObserverName"
TAGS: list[dict[str, Any]] = [
    {"tag": "OperatorsName", "level": "series"},
    {"tag": OBSERVER, "level": "instance"},
]
SERIES = f"/dicom-web/studies/{CT.StudyInstanceUID}/series"
INSTANCES = f"/dicom-web/studies/{CT.StudyInstanceUID}/instances"


def _named() -> bytes:
    """CT_small in UTF-8, operated by two people, verified by a name in three scripts."""
    ds = dcmread(CT_SMALL)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.OperatorsName = ["Second^Operator", "Buc^Jérôme"]
    observer = Dataset()
    observer.VerifyingObserverName = "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
    observer.VerificationDateTime = "20240102120000"
    ds.VerifyingObserverSequence = [observer]
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


async def test_qido_fuzzy_matching_of_extended_person_names(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(search__extended_query_tags=TAGS)
    assert (await local.stow([_named()])).status_code == 200

    async def series(**params: str) -> list[str]:
        response = await local.client.get(SERIES, params=params)
        assert response.status_code == 200, response.text
        return [found["0020000E"]["Value"][0] for found in response.json()]

    async def instances(**params: str) -> list[str]:
        response = await local.client.get(INSTANCES, params=params)
        assert response.status_code == 200, response.text
        return [found["00080018"]["Value"][0] for found in response.json()]

    fuzzy = {"fuzzymatching": "true"}
    assert await series(OperatorsName="buc^jerome", **fuzzy) == [CT.SeriesInstanceUID]
    assert await series(OperatorsName="BUC*", **fuzzy) == [CT.SeriesInstanceUID]
    assert await series(OperatorsName="buc^jerome") == []  # as typed without it
    assert await series(OperatorsName="Buc^Jérôme") == [CT.SeriesInstanceUID]
    assert await series(OperatorsName="smith*", **fuzzy) == []
    by_path = {OBSERVER: "ヤマダ^タロウ", **fuzzy}  # full width finds the half-width name
    assert await instances(**by_path) == [CT.SOPInstanceUID]
    assert await instances(**{OBSERVER: "ヤマダ^タロウ"}) == []
    assert await instances(**{"0040A073.0040A075": "やまだ*", **fuzzy}) == [CT.SOPInstanceUID]

    response = await local.client.get(SERIES, params={"OperatorsName": "buc*", **fuzzy})
    (found,) = response.json()
    operators = [value["Alphabetic"] for value in found["00081070"]["Value"]]
    assert operators == ["Second^Operator", "Buc^Jérôme"]  # returned as stored


def _operator_key(name: str) -> Dataset:
    return identifier(
        "SERIES", StudyInstanceUID=CT.StudyInstanceUID, SeriesInstanceUID="", OperatorsName=name
    )


async def test_c_find_fuzzy_matching_of_extended_person_names(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(search__extended_query_tags=TAGS)
    assert (await local.stow([_named()])).status_code == 200
    fuzzy, plain = bytes([1, 1, 1, 1]), bytes([0, 1, 0])

    async with dimse_for(local) as dimse:
        found = {}
        for options in (fuzzy, plain):
            _, responses = await asyncio.to_thread(
                c_find_fuzzy, dimse.port, _operator_key("buc^jer*"), options
            )
            *pending, (final, _) = responses
            assert final.Status == SUCCESS
            found[options] = [ds for _, ds in pending if ds is not None]

    (series,) = found[fuzzy]
    assert series.SeriesInstanceUID == CT.SeriesInstanceUID
    assert [str(name) for name in series.OperatorsName] == ["Second^Operator", "Buc^Jérôme"]
    assert found[plain] == []  # case-sensitive on an association without fuzzy matching


REINDEX_CONFIG = """
[[search.extended_query_tags]]
tag = "OperatorsName"
level = "series"

[[search.extended_query_tags]]
tag = "Manufacturer"
level = "series"
"""


async def _operated_by(data_dir: Path, config: Path, name: str) -> list[str]:
    tags = load_settings(config, data_dir=data_dir).search.extended_tags()
    index = SqlIndex.from_url(f"sqlite:///{data_dir / 'index.sqlite3'}", tags)
    try:
        params = [("OperatorsName", name), ("fuzzymatching", "true")]
        query = parse_qido(QueryLevel.SERIES, params, known=SERIES_SEARCH_KEYS, extended=tags)
        return [r.series.series_instance_uid for r in await index.search_series("default", query)]
    finally:
        await index.close()


def test_reindex_fills_the_folded_extended_names(tmp_path: Path) -> None:
    """An index written before migration 0008 has no folded copies: fuzzy matching
    falls back to ``lower()``, which folds neither width nor voicing marks, until
    ``dicomcloud reindex`` stores them."""
    h32 = dcmread(get_charset_files("chrH32.dcm")[0])
    h32.OperatorsName = h32.PatientName  # ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう, ISO 2022
    h32.Manufacturer = "ACME"  # not a PN: no folded copy
    source = tmp_path / "operated.dcm"
    h32.save_as(source, enforce_file_format=True)
    data_dir = tmp_path / "data"
    config = tmp_path / "dicomcloud.toml"
    config.write_text(REINDEX_CONFIG)
    imported = run(
        "import", "--config", str(config), "--data-dir", str(data_dir), str(source), cwd=tmp_path
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert asyncio.run(_operated_by(data_dir, config, "ヤマダ*")) == [h32.SeriesInstanceUID]
    database = data_dir / "index.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE extended_tag_value SET value_folded = NULL")
    assert asyncio.run(_operated_by(data_dir, config, "ヤマダ*")) == []

    result = run("reindex", "--config", str(config), "--data-dir", str(data_dir), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert asyncio.run(_operated_by(data_dir, config, "ヤマダ*")) == [h32.SeriesInstanceUID]
    with sqlite3.connect(database) as conn:
        rows = dict(conn.execute("SELECT tag, value_folded FROM extended_tag_value").fetchall())
    # Width, case and voicing marks folded (PS3.4 C.2.2.2.6, ``patterns.fold``).
    assert rows == {"OperatorsName": "ヤマタ^タロウ=山田^太郎=やまた^たろう", "Manufacturer": None}
