"""The search-at-scale loader (bench/loader.py) fills an index that dicomcloud's own
query service reads correctly: the result counts equal what the generator says it wrote."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dicomcloud.domain.query import QueryLevel, parse_qido
from dicomcloud.index import SqlIndex
from dicomcloud.services.query import SEARCH_KEYS, QueryService

# bench/ lives next to src/, outside the installed package
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.loader import LoadReport, ScaleSpec, load_sqlite

SPEC = ScaleSpec(patients=20, studies=50, instances=1_000, seed=7)


async def _count(service: QueryService, level: QueryLevel, *params: tuple[str, str]) -> int:
    query = parse_qido(level, list(params), known=SEARCH_KEYS[level])
    return len(await service.search("default", query))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LoadReport]:
    path = tmp_path_factory.mktemp("scale") / "index.sqlite3"
    report = load_sqlite(path, SPEC)
    return path, report


def test_row_counts_are_the_requested_scale(loaded: tuple[Path, LoadReport]) -> None:
    _, report = loaded
    assert report.rows["patient"] == 20
    assert report.rows["study"] == 50
    assert report.rows["instance"] == 1_000


async def test_qido_counts_match_the_generated_data(loaded: tuple[Path, LoadReport]) -> None:
    path, report = loaded
    v = report.values
    index = SqlIndex.from_url(f"sqlite:///{path}")
    service = QueryService(index)
    try:
        study = QueryLevel.STUDY
        assert await _count(service, study) == 50
        assert await _count(service, study, ("PatientID", v.patient_id)) == v.patient_id_studies
        date_range = f"{v.date_low}-{v.date_high}"
        assert await _count(service, study, ("StudyDate", date_range)) == v.date_range_studies
        assert await _count(service, study, ("AccessionNumber", v.accession_number)) == 1
        assert await _count(service, study, ("limit", "25"), ("offset", "10")) == 25
        series = await _count(service, QueryLevel.SERIES, ("StudyInstanceUID", v.study_uid))
        assert series == v.study_series
        instances = await _count(
            service,
            QueryLevel.IMAGE,
            ("StudyInstanceUID", v.study_uid),
            ("SeriesInstanceUID", v.series_uid),
        )
        assert instances == v.series_instances
        studies = await service.search(
            "default",
            parse_qido(study, [("PatientID", v.patient_id)], known=SEARCH_KEYS[study]),
        )
        assert sum(s.number_of_instances for s in studies) > 0
    finally:
        await index.close()
