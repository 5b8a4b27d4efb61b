"""Fuzzy matching of PN-valued extended query tags on every backend (memory, SQLite,
PostgreSQL, MySQL): OperatorsName, and VerifyingObserverName inside
VerifyingObserverSequence (sequence matching, PS3.4 C.2.2.2.6), match as PatientName
does: as typed without ``fuzzymatching``, case, accents and width folded with it
(PS3.4 C.2.2.2.6, PS3.18 8.3.4.5).  A non-PN extended tag stays case-sensitive."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backends import BACKENDS, IndexUnderTest, SharedDatabases, empty_index, params
from dicomcloud.config import ExtendedQueryTagSettings
from dicomcloud.domain.query import QueryLevel, parse_qido
from dicomcloud.services.query import SEARCH_KEYS

from .records import STUDY, write
from .test_search_names_contract import EXACT, FUZZY, NAMES

TAGS = tuple(
    ExtendedQueryTagSettings.model_validate(item).resolved()
    for item in (
        {"tag": "OperatorsName", "level": "series"},
        {"tag": "VerifyingObserverSequence.VerifyingObserverName", "level": "instance"},
        {"tag": "Manufacturer", "level": "series"},
    )
)
OPERATOR = "OperatorsName"
OBSERVER = "VerifyingObserverSequence.VerifyingObserverName"


@pytest.fixture(params=params(BACKENDS))
async def index(
    request: pytest.FixtureRequest, tmp_path: Path, shared_databases: SharedDatabases
) -> AsyncIterator[IndexUnderTest]:
    """An empty index with ``TAGS`` configured, on every backend in turn."""
    async with empty_index(request.param, tmp_path, shared_databases, TAGS) as opened:
        yield opened


def _pn(name: str) -> dict[str, str]:
    """A PN value as DICOM JSON writes it (PS3.18 F.2.2): component groups apart."""
    return dict(zip(("Alphabetic", "Ideographic", "Phonetic"), name.split("="), strict=False))


async def _seed(index: IndexUnderTest) -> None:
    """One study per name of ``NAMES``: its series operated by that person (and by
    ``Second^Operätor``, a second value), its instance verified by the same person."""
    writes = []
    for n, name in enumerate(NAMES.values(), start=1):
        study = f"{STUDY}.{n}"
        series = json.dumps(
            {
                "00081070": {"vr": "PN", "Value": [_pn("Second^Operätor"), _pn(name)]},
                "00080070": {"vr": "LO", "Value": ["GE MEDICAL"]},
            }
        )
        observer = {"0040A075": {"vr": "PN", "Value": [_pn(name)]}}
        instance = json.dumps({"0040A073": {"vr": "SQ", "Value": [observer]}})
        writes.append(
            write(
                f"{study}.1.1",
                study=study,
                series=f"{study}.1",
                patient_id=f"P{n}",
                series_attrs={"attributes": series},
                attributes=instance,
            )
        )
    await index.store_instances(writes)


async def _found(index: IndexUnderTest, key: str, value: str, *, fuzzy: bool) -> set[str]:
    """The names (keys of ``NAMES``) whose instances match."""
    params = [(key, value), ("fuzzymatching", "true" if fuzzy else "false")]
    query = parse_qido(QueryLevel.IMAGE, params, known=SEARCH_KEYS[QueryLevel.IMAGE], extended=TAGS)
    names = {f"{STUDY}.{n}.1.1": key for n, key in enumerate(NAMES, start=1)}
    return {names[r.instance.sop_instance_uid] for r in await index.search_instances("t1", query)}


@pytest.mark.parametrize("key", [OPERATOR, OBSERVER])
async def test_names_as_typed_without_fuzzy_matching(index: IndexUnderTest, key: str) -> None:
    await _seed(index)

    wrong = {
        value: (got, expected)
        for value, expected in EXACT
        if (got := await _found(index, key, value, fuzzy=False)) != expected
    }
    assert wrong == {}


@pytest.mark.parametrize("key", [OPERATOR, OBSERVER])
async def test_fuzzy_names_fold_case_accents_and_width(index: IndexUnderTest, key: str) -> None:
    await _seed(index)

    wrong = {
        value: (got, expected)
        for value, expected in FUZZY
        if (got := await _found(index, key, value, fuzzy=True)) != expected
    }
    assert wrong == {}


async def test_fuzzy_matching_leaves_other_vrs_alone(index: IndexUnderTest) -> None:
    await _seed(index)

    everyone = set(NAMES)
    assert await _found(index, "Manufacturer", "GE*", fuzzy=True) == everyone
    assert await _found(index, "Manufacturer", "ge*", fuzzy=True) == set()
    assert await _found(index, "Manufacturer", "ge medical", fuzzy=True) == set()
    # A second value of the same attribute matches on its own (fuzzily too).
    assert await _found(index, OPERATOR, "second^operator", fuzzy=True) == everyone
    assert await _found(index, OPERATOR, "second^operator", fuzzy=False) == set()
