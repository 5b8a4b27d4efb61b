"""Series and instance search of the Index port (PS3.18 10.6, PS3.4 C.2.2.2), asserted
on every backend: memory, SQLite, PostgreSQL, MySQL.  Queries are written as QIDO-RS
parameters and parsed as the routes parse them."""

from __future__ import annotations

import pytest

from backends import IndexUnderTest as Index
from dicomcloud.domain.query import QueryError, QueryLevel, parse_qido
from dicomcloud.domain.results import InstanceResult, SeriesResult
from dicomcloud.services.query import SEARCH_KEYS

from .records import CT_IMAGE, STUDY, write

SR_DOCUMENT = "1.2.840.10008.5.1.4.1.1.88.11"
X, Y = f"{STUDY}.1", f"{STUDY}.2"

# name: (study, uid, patient id, series attributes)
SERIES = {
    "X1": (
        X,
        f"{X}.9",
        "P1",
        {"modality": "CT", "series_number": 2, "series_description": "Chest"},
    ),
    "X2": (X, f"{X}.8", "P1", {"modality": "SR", "series_description": "Report"}),
    "X3": (
        X,
        f"{X}.7",
        "P1",
        {"modality": "MR", "series_number": 1, "series_description": "Äxial 頭"},
    ),
    "Y1": (
        Y,
        f"{Y}.1",
        "P2",
        {"modality": "CT", "series_number": 2, "series_description": "Chest"},
    ),
}
# name: (series, uid suffix, InstanceNumber, Rows, SOP class)
INSTANCES = {
    "a": ("X1", "1", 2, 512, CT_IMAGE),
    "b": ("X1", "2", 1, 512, CT_IMAGE),
    "c": ("X1", "3", None, 512, CT_IMAGE),
    "d": ("X2", "1", None, None, SR_DOCUMENT),
    "e": ("X3", "10", 1, 256, CT_IMAGE),  # "…7.10" sorts before "…7.9" (code points)
    "f": ("X3", "9", 1, 256, CT_IMAGE),
    "g": ("Y1", "1", 10, 256, CT_IMAGE),
}
SERIES_ORDER = ["X3", "X1", "Y1", "X2"]  # SeriesNumber, absent last, then UID
INSTANCE_ORDER = ["e", "f", "b", "a", "g", "d", "c"]  # InstanceNumber, absent last, UID
NAMES = {"P1": "Doe^John", "P2": "Müller^Jürgen"}


def sop(name: str) -> str:
    series, suffix, *_ = INSTANCES[name]
    return f"{SERIES[series][1]}.{suffix}"


async def seed(index: Index, tenant: str = "t1", series_names: str = "X1 X2 X3 Y1") -> None:
    wanted = series_names.split()
    writes = []
    for name, (series, _, number, rows, sop_class) in INSTANCES.items():
        if series not in wanted:
            continue
        study, series_uid, patient_id, attrs = SERIES[series]
        writes.append(
            write(
                sop(name),
                tenant=tenant,
                study=study,
                series=series_uid,
                patient_id=patient_id,
                patient={"patient_name": NAMES[patient_id]},
                study_attrs={"study_date": "20240115" if study == X else "20240301"},
                series_attrs=attrs,
                sop_class_uid=sop_class,
                instance_number=number,
                rows=rows,
            )
        )
    await index.store_instances(writes)


async def series_search(
    index: Index, *params: tuple[str, str], tenant: str = "t1"
) -> list[SeriesResult]:
    query = parse_qido(QueryLevel.SERIES, params, known=SEARCH_KEYS[QueryLevel.SERIES])
    return await index.search_series(tenant, query)


async def instance_search(
    index: Index, *params: tuple[str, str], tenant: str = "t1"
) -> list[InstanceResult]:
    query = parse_qido(QueryLevel.IMAGE, params, known=SEARCH_KEYS[QueryLevel.IMAGE])
    return await index.search_instances(tenant, query)


async def found_series(index: Index, *params: tuple[str, str], tenant: str = "t1") -> list[str]:
    names = {uid: name for name, (_, uid, _, _) in SERIES.items()}
    results = await series_search(index, *params, tenant=tenant)
    return [names[r.series.series_instance_uid] for r in results]


async def found_instances(index: Index, *params: tuple[str, str], tenant: str = "t1") -> list[str]:
    names = {sop(name): name for name in INSTANCES}
    results = await instance_search(index, *params, tenant=tenant)
    return [names[r.instance.sop_instance_uid] for r in results]


async def test_all_series_in_documented_order_with_computed_attributes(index: Index) -> None:
    await seed(index)

    results = await series_search(index)

    assert [r.series.series_instance_uid for r in results] == [SERIES[n][1] for n in SERIES_ORDER]
    assert [r.number_of_instances for r in results] == [2, 3, 1, 1]
    x1 = results[1]
    assert x1.series.modality == "CT" and x1.series.series_number == 2
    assert x1.study.study_instance_uid == X and x1.study.study_date == "20240115"
    assert x1.patient is not None and x1.patient.patient_name == "Doe^John"


async def test_all_instances_in_documented_order_with_their_parents(index: Index) -> None:
    await seed(index)

    results = await instance_search(index)

    assert [r.instance.sop_instance_uid for r in results] == [sop(n) for n in INSTANCE_ORDER]
    g = results[4]
    assert g.instance.instance_number == 10 and g.instance.rows == 256
    assert g.series.series_instance_uid == SERIES["Y1"][1] and g.study.study_instance_uid == Y
    assert g.patient is not None and g.patient.patient_name == "Müller^Jürgen"


async def test_empty_index_finds_nothing(index: Index) -> None:
    assert await series_search(index) == []
    assert await instance_search(index, ("Modality", "CT")) == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ((("Modality", "CT"),), ["X1", "Y1"]),
        ((("Modality", "ct"),), []),
        ((("Modality", "?R"),), ["X3", "X2"]),
        ((("SeriesNumber", "2"),), ["X1", "Y1"]),
        ((("SeriesNumber", "+1"),), ["X3"]),
        ((("SeriesDescription", "Äxial*"),), ["X3"]),
        ((("SeriesDescription", "*頭"),), ["X3"]),
        ((("StudyInstanceUID", X),), ["X3", "X1", "X2"]),
        ((("StudyInstanceUID", X), ("Modality", "CT")), ["X1"]),
        ((("PatientID", "P2"),), ["Y1"]),
        ((("PatientName", "müller*"), ("fuzzymatching", "true")), ["Y1"]),
        ((("StudyDate", "20240201-"),), ["Y1"]),
        ((("SeriesInstanceUID", f"{X}.8,{Y}.1"),), ["Y1", "X2"]),
        ((("limit", "2"), ("offset", "1")), ["X1", "Y1"]),
        ((("offset", "4"),), []),
    ],
)
async def test_series_matching_and_paging(
    index: Index, params: tuple[tuple[str, str], ...], expected: list[str]
) -> None:
    await seed(index)

    assert await found_series(index, *params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ((("SeriesInstanceUID", SERIES["X1"][1]),), ["b", "a", "c"]),
        ((("InstanceNumber", "1"),), ["e", "f", "b"]),
        ((("InstanceNumber", "10"), ("PatientID", "P1")), []),
        ((("SOPClassUID", SR_DOCUMENT),), ["d"]),
        ((("Rows", "512"),), ["b", "a", "c"]),
        ((("Modality", "MR"),), ["e", "f"]),
        ((("StudyInstanceUID", Y),), ["g"]),
        ((("SeriesNumber", "2"), ("InstanceNumber", "2")), ["a"]),
        ((("PatientName", "Doe^John"), ("SeriesDescription", "R*")), ["d"]),
        ((("limit", "2"), ("offset", "2")), ["b", "a"]),
        ((("limit", "3"), ("offset", "5")), ["d", "c"]),
    ],
)
async def test_instance_matching_and_paging(
    index: Index, params: tuple[tuple[str, str], ...], expected: list[str]
) -> None:
    await seed(index)

    assert await found_instances(index, *params) == expected


async def test_tenants_see_only_their_own_series_and_instances(index: Index) -> None:
    await seed(index, "t1")
    await seed(index, "t2", series_names="X1")

    assert await found_series(index, tenant="t2") == ["X1"]
    assert [r.number_of_instances for r in await series_search(index, tenant="t2")] == [3]
    assert await found_instances(index, tenant="t2") == ["b", "a", "c"]
    assert await found_instances(index) == INSTANCE_ORDER
    assert await found_series(index, tenant="t3") == []


@pytest.mark.parametrize(
    ("level", "key", "value"),
    [
        (QueryLevel.SERIES, "SeriesNumber", "1*"),
        (QueryLevel.IMAGE, "InstanceNumber", "one"),
        (QueryLevel.SERIES, "SOPClassUID", CT_IMAGE),  # an instance key
        (QueryLevel.SERIES, "ModalitiesInStudy", "CT"),  # computed, study level only
    ],
)
def test_keys_a_level_cannot_match_are_refused(level: QueryLevel, key: str, value: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_qido(level, [(key, value)], known=SEARCH_KEYS[level])

    assert caught.value.key == key
