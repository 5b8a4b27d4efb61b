"""The study search of the Index port (PS3.18 10.6, PS3.4 C.2.2.2), asserted on every
backend: memory, SQLite, PostgreSQL, MySQL.  Queries are written as QIDO-RS parameters
and parsed as the route parses them."""

from __future__ import annotations

import pytest

from backends import IndexUnderTest as Index
from dicomcloud.domain.query import Query, QueryLevel, parse_qido
from dicomcloud.domain.results import StudyResult
from dicomcloud.services.query import STUDY_SEARCH_KEYS

from .records import CT_IMAGE, STUDY, write

SR_DOCUMENT = "1.2.840.10008.5.1.4.1.1.88.11"

# name: (patient id, patient name, study attributes, [(modality, sop classes)])
STUDIES = {
    "A": (
        "P1",
        "Doe^John",
        {"study_date": "20240115", "study_time": "101500", "accession_number": "ACC_1%"},
        [("CT", [CT_IMAGE, CT_IMAGE]), ("SR", [SR_DOCUMENT])],
    ),
    "B": (
        "P2",
        "Yamada^Tarou=山田^太郎=やまだ^たろう",
        {"study_date": "20240301", "accession_number": "ACCX1Y"},
        [("MR", [CT_IMAGE])],
    ),
    "C": ("P3", "王^小明", {"accession_number": "acc-3"}, [("CT", [CT_IMAGE])]),
    "D": (
        "P4",
        "Müller^Jürgen",
        {"study_date": "20231231", "accession_number": "ACC%1"},
        [("US", [CT_IMAGE])],
    ),
}
ALL_IN_ORDER = ["B", "A", "D", "C"]  # StudyDate newest first, absent last


def study_uid(name: str, tenant: str = "t1") -> str:
    return f"{STUDY}.{ord(name)}.{1 if tenant == 't1' else 2}"


async def seed(index: Index, tenant: str = "t1", names: str = "ABCD") -> None:
    writes = []
    for name in names:
        patient_id, patient_name, attrs, series_list = STUDIES[name]
        study = study_uid(name, tenant)
        for s, (modality, classes) in enumerate(series_list, start=1):
            series = f"{study}.{s}"
            for i, sop_class in enumerate(classes, start=1):
                writes.append(
                    write(
                        f"{series}.{i}",
                        tenant=tenant,
                        study=study,
                        series=series,
                        patient_id=patient_id,
                        patient={"patient_name": patient_name},
                        study_attrs=attrs,
                        series_attrs={"modality": modality},
                        sop_class_uid=sop_class,
                    )
                )
    await index.store_instances(writes)


def query(*params: tuple[str, str]) -> Query:
    return parse_qido(QueryLevel.STUDY, params, known=STUDY_SEARCH_KEYS)


async def found(index: Index, *params: tuple[str, str], tenant: str = "t1") -> list[str]:
    names = {study_uid(n, tenant): n for n in STUDIES}
    return [names[r.study.study_instance_uid] for r in await search(index, *params, tenant=tenant)]


async def search(index: Index, *params: tuple[str, str], tenant: str = "t1") -> list[StudyResult]:
    return await index.search_studies(tenant, query(*params))


async def test_all_studies_in_documented_order_with_computed_attributes(index: Index) -> None:
    await seed(index)

    results = await search(index)

    assert [r.study.study_instance_uid for r in results] == [study_uid(n) for n in ALL_IN_ORDER]
    a = results[1]
    assert (a.number_of_series, a.number_of_instances) == (2, 3)
    assert a.modalities == ("CT", "SR")
    assert a.sop_classes == tuple(sorted((CT_IMAGE, SR_DOCUMENT)))
    assert a.study.accession_number == "ACC_1%" and a.study.study_time == "101500"
    assert a.patient is not None and a.patient.patient_name == "Doe^John"
    assert results[0].patient is not None
    assert results[0].patient.patient_name == STUDIES["B"][1]


async def test_empty_index_finds_nothing(index: Index) -> None:
    assert await search(index, ("PatientID", "P1")) == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ((("PatientID", "P1"),), ["A"]),
        ((("PatientID", ""),), ALL_IN_ORDER),  # universal
        ((("AccessionNumber", "acc-3"),), ["C"]),
        ((("AccessionNumber", "ACC-3"),), []),  # case-sensitive
        ((("AccessionNumber", "ACC%1"),), ["D"]),  # % is no wildcard
        ((("AccessionNumber", "ACC_1*"),), ["A"]),  # _ is no wildcard
        ((("AccessionNumber", "ACC?1*"),), ["B", "A", "D"]),
        ((("AccessionNumber", "*%"),), ["A"]),
        ((("AccessionNumber", "acc*"),), ["C"]),
        ((("StudyDate", "20240101-20240131"),), ["A"]),
        ((("StudyDate", "-20240115"),), ["A", "D"]),
        ((("StudyDate", "20240115-"),), ["B", "A"]),
        ((("StudyDate", "20231231"),), ["D"]),
        ((("StudyTime", "100000-110000"),), ["A"]),
        ((("ModalitiesInStudy", "CT"),), ["A", "C"]),
        ((("ModalitiesInStudy", "SR"),), ["A"]),
        ((("ModalitiesInStudy", "M*"),), ["B"]),
        ((("ModalitiesInStudy", "CT"), ("PatientID", "P3")), ["C"]),
        ((("PatientName", "Doe^John"),), ["A"]),
        ((("PatientName", "doe^john"),), []),
        ((("PatientName", "Yamada^Tarou"),), ["B"]),
        ((("PatientName", "山田^太郎"),), ["B"]),
        ((("PatientName", "やまだ*"),), ["B"]),
        ((("PatientName", "王^小明"),), ["C"]),
        ((("PatientName", "王*"),), ["C"]),
        ((("PatientName", "Müller^Jürgen"),), ["D"]),
        ((("PatientName", "M?ller*"),), ["D"]),
        ((("PatientName", "Muller*"),), []),
        ((("PatientName", "*^J*"),), ["A", "D"]),
    ],
)
async def test_matching(
    index: Index, params: tuple[tuple[str, str], ...], expected: list[str]
) -> None:
    await seed(index)

    assert await found(index, *params) == expected


async def test_uid_list(index: Index) -> None:
    await seed(index)

    uids = f"{study_uid('A')},{study_uid('C')},1.2.3"

    assert await found(index, ("StudyInstanceUID", uids)) == ["A", "C"]
    assert await found(index, ("StudyInstanceUID", study_uid("D"))) == ["D"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("doe^john", ["A"]), ("DOE*", ["A"]), ("yamada*", ["B"]), ("müller^jürgen", ["D"])],
)
async def test_fuzzy_person_names_ignore_case(index: Index, name: str, expected: list[str]) -> None:
    await seed(index)

    assert await found(index, ("PatientName", name), ("fuzzymatching", "true")) == expected


async def test_fuzzy_matching_leaves_other_attributes_case_sensitive(index: Index) -> None:
    await seed(index)

    assert await found(index, ("AccessionNumber", "ACC-3"), ("fuzzymatching", "true")) == []


async def test_limit_and_offset_page_through_a_stable_order(index: Index) -> None:
    await seed(index)

    pages = [await found(index, ("limit", "1"), ("offset", str(n))) for n in range(5)]

    assert pages == [["B"], ["A"], ["D"], ["C"], []]
    assert await found(index, ("limit", "2"), ("offset", "1")) == ["A", "D"]
    assert await found(index, ("offset", "3")) == ["C"]
    assert await found(index, ("ModalitiesInStudy", "CT"), ("limit", "1"), ("offset", "1")) == ["C"]


async def test_tenants_see_only_their_own_studies(index: Index) -> None:
    await seed(index, "t1")
    await seed(index, "t2", names="A")

    assert await found(index, ("PatientID", "P1"), tenant="t2") == ["A"]
    assert await found(index, tenant="t2") == ["A"]
    assert await found(index, ("PatientID", "P1")) == ["A"]
    assert await found(index, tenant="t3") == []
    (t2,) = await search(index, tenant="t2")
    assert (t2.number_of_series, t2.number_of_instances) == (2, 3)
