"""The PATIENT-level search of the Index port (PS3.4 C.6.1.1.2, Patient Root C-FIND),
asserted on every backend: matching on patient attributes, the computed
NumberOfPatientRelated* counts, order and paging, tenants."""

from __future__ import annotations

import pytest

from backends import IndexUnderTest as Index
from dicomcloud.domain.query import QueryLevel, parse_qido
from dicomcloud.domain.results import PatientResult
from dicomcloud.services.query import PATIENT_SEARCH_KEYS

from .records import STUDY, write

# patient id: (name, birth date, sex, studies -> series -> instance count)
PATIENTS = {
    "P1": ("Doe^John", "19700101", "M", [[2, 1], [3]]),
    "P2": ("Yamada^Tarou=山田^太郎=やまだ^たろう", "19851231", "M", [[1]]),
    "P3": ("Müller^Jürgen", None, "F", [[1, 1, 1]]),
}


async def seed(index: Index, tenant: str = "t1") -> None:
    writes = []
    for p, (patient_id, (name, birth, sex, studies)) in enumerate(PATIENTS.items(), start=1):
        for s, series_list in enumerate(studies, start=1):
            study = f"{STUDY}.{p}.{s}"
            for se, count in enumerate(series_list, start=1):
                series = f"{study}.{se}"
                writes.extend(
                    write(
                        f"{series}.{i}",
                        tenant=tenant,
                        study=study,
                        series=series,
                        patient_id=patient_id,
                        patient={
                            "patient_name": name,
                            "patient_birth_date": birth,
                            "patient_sex": sex,
                        },
                    )
                    for i in range(1, count + 1)
                )
    await index.store_instances(writes)


async def search(index: Index, *params: tuple[str, str], tenant: str = "t1") -> list[PatientResult]:
    query = parse_qido(QueryLevel.PATIENT, params, known=PATIENT_SEARCH_KEYS)
    return await index.search_patients(tenant, query)


async def found(index: Index, *params: tuple[str, str]) -> list[str]:
    return [r.patient.patient_id for r in await search(index, *params)]


async def test_every_patient_with_related_counts_in_patient_id_order(index: Index) -> None:
    await seed(index)

    results = await search(index)

    assert [r.patient.patient_id for r in results] == ["P1", "P2", "P3"]
    counts = [(r.number_of_studies, r.number_of_series, r.number_of_instances) for r in results]
    assert counts == [(2, 3, 6), (1, 1, 1), (1, 3, 3)]
    assert results[1].patient.patient_name == PATIENTS["P2"][0]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ((("PatientID", "P2"),), ["P2"]),
        ((("PatientID", "P*"),), ["P1", "P2", "P3"]),
        ((("PatientName", "Doe^John"),), ["P1"]),
        ((("PatientName", "山田*"),), ["P2"]),
        ((("PatientName", "M?ller^*"),), ["P3"]),
        ((("PatientBirthDate", "19800101-"),), ["P2"]),
        ((("PatientBirthDate", "-19800101"),), ["P1"]),
        ((("PatientSex", "M"),), ["P1", "P2"]),
        ((("PatientSex", "M"), ("PatientName", "Doe*")), ["P1"]),
        ((("PatientName", "doe^john"),), []),
        ((("PatientName", "doe^john"), ("fuzzymatching", "true")), ["P1"]),
    ],
)
async def test_matching(
    index: Index, params: tuple[tuple[str, str], ...], expected: list[str]
) -> None:
    await seed(index)

    assert await found(index, *params) == expected


async def test_paging_and_tenants(index: Index) -> None:
    await seed(index)
    await seed(index, tenant="t2")

    assert await found(index, ("limit", "1"), ("offset", "1")) == ["P2"]
    assert await found(index, ("offset", "3")) == []
    (other,) = await search(index, ("PatientID", "P1"), tenant="t2")
    assert (other.number_of_studies, other.number_of_instances) == (2, 6)
    assert await search(index, tenant="t3") == []
