"""Extended query tags on every backend (memory, SQLite, PostgreSQL, MySQL): a public
tag configured at the series level and private tags (PS3.5 7.8.1) at the instance
level become matching keys (PS3.4 C.2.2.2) with the same results everywhere; an
attribute inside a sequence, configured by its path (``ProcedureCodeSequence.
CodeValue``), gives sequence matching (C.2.2.2.6): a record matches when one item's
value matches, and QIDO-RS takes the path by keywords or by tags (PS3.18 8.3.4.1)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backends import BACKENDS, IndexUnderTest, SharedDatabases, empty_index, params
from dicomcloud.config import ExtendedQueryTagSettings
from dicomcloud.domain.query import QueryError, QueryLevel, parse_qido
from dicomcloud.domain.records import DuplicatePolicy
from dicomcloud.services.query import SEARCH_KEYS

from .records import STUDY, write

CREATOR = "ACME 1.0"
TAGS = tuple(
    ExtendedQueryTagSettings.model_validate(item).resolved()
    for item in (
        {"tag": "Manufacturer", "level": "series"},
        {"tag": "00191010", "level": "instance", "vr": "LO", "private_creator": CREATOR},
        {"tag": "00191011", "level": "instance", "vr": "IS", "private_creator": CREATOR},
        {"tag": "AcquisitionDate", "level": "instance"},
        {"tag": "SliceThickness", "level": "instance"},  # DS
        {"tag": "00191012", "level": "instance", "vr": "FL", "private_creator": CREATOR},
        {"tag": "00191013", "level": "instance", "vr": "SL", "private_creator": CREATOR},
        {"tag": "ProcedureCodeSequence.CodeValue", "level": "study"},
    )
)
S1, S2, S3 = (f"{STUDY}.{n}" for n in (1, 2, 3))


@pytest.fixture(params=params(BACKENDS))
async def index(
    request: pytest.FixtureRequest, tmp_path: Path, shared_databases: SharedDatabases
) -> AsyncIterator[IndexUnderTest]:
    """An empty index with ``TAGS`` configured, on every backend in turn."""
    async with empty_index(request.param, tmp_path, shared_databases, TAGS) as opened:
        yield opened


def _lo(*values: Any, vr: str = "LO") -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)}


#: SOP Instance name: (SliceThickness DS as written, private FL, private SL) values.
NUMBERS: dict[str, tuple[list[Any], list[float], list[int]]] = {
    "a": (["1.50"], [0.10000000149011612], [-5]),  # FL 0.1 as DICOM JSON spells it
    "b": (["2"], [2.5], [70000]),
    "c": (["15E-1"], [0.10000000149011612], [-5]),  # in another creator's block
    "d": ([], [], []),
}


def _private(name: str, block: int, creator: str, text: str | None, numbers: list[int]) -> str:
    """Instance JSON with the private block ``block`` reserved by ``creator``."""
    found: dict[str, Any] = {f"0019{block:04X}": _lo(creator)}
    if text is not None:
        found[f"0019{block:02X}10"] = _lo(text)
    if numbers:
        found[f"0019{block:02X}11"] = _lo(*numbers, vr="IS")
    found["00080022"] = _lo("20240102", vr="DA")
    thickness, singles, longs = NUMBERS[name]
    if thickness:
        found["00180050"] = _lo(*thickness, vr="DS")
    if singles:
        found[f"0019{block:02X}12"] = _lo(*singles, vr="FL")
    if longs:
        found[f"0019{block:02X}13"] = _lo(*longs, vr="SL")
    return json.dumps(found)


def _manufacturer(name: str | None) -> str | None:
    return None if name is None else json.dumps({"00080070": _lo(name)})


# name: (series, InstanceNumber, manufacturer, private block, creator, text, numbers)
INSTANCES = {
    "a": (S1, 1, "GE MEDICAL", 0x11, CREATOR, "FAST", [12]),  # block 11: (0019,1110)
    "b": (S1, 2, "GE MEDICAL", 0x10, CREATOR, "SLOW", [7, 12]),
    "c": (S2, 1, "SIEMENS", 0x10, "OTHER", "FAST", [12]),  # another creator's block
    "d": (S3, 1, None, 0x10, CREATOR, None, []),
}


def _write(name: str, *, text: str | None = None, policy: DuplicatePolicy | None = None) -> Any:
    series, number, maker, block, creator, value, numbers = INSTANCES[name]
    return write(
        f"{series}.{number}",
        series=series,
        series_attrs={"attributes": _manufacturer(maker)},
        instance_number=number,
        attributes=_private(name, block, creator, text or value, numbers),
        policy=policy or DuplicatePolicy.KEEP_FIRST,
    )


async def _found(index: IndexUnderTest, level: QueryLevel, *query: tuple[str, str]) -> list[str]:
    parsed = parse_qido(level, query, known=SEARCH_KEYS[level], extended=TAGS)
    names = {f"{s}.{n}": key for key, (s, n, *_) in INSTANCES.items()}
    if level is QueryLevel.SERIES:
        series = await index.search_series("t1", parsed)
        return [r.series.series_instance_uid for r in series]
    return [names[r.instance.sop_instance_uid] for r in await index.search_instances("t1", parsed)]


async def test_public_tag_matches_at_its_level_and_below(index: IndexUnderTest) -> None:
    await index.store_instances([_write(name) for name in INSTANCES])

    assert await _found(index, QueryLevel.SERIES, ("Manufacturer", "GE*")) == [S1]
    assert await _found(index, QueryLevel.SERIES, ("00080070", "SIEMENS")) == [S2]
    assert await _found(index, QueryLevel.SERIES, ("Manufacturer", "ge*")) == []
    assert await _found(index, QueryLevel.IMAGE, ("Manufacturer", "SIEMENS")) == ["c"]
    assert await _found(index, QueryLevel.IMAGE, ("Manufacturer", "")) == ["a", "c", "d", "b"]
    with pytest.raises(QueryError, match="Manufacturer"):
        await _found(index, QueryLevel.STUDY, ("Manufacturer", "SIEMENS"))


async def test_private_tag_matches_by_its_creator_block(index: IndexUnderTest) -> None:
    await index.store_instances([_write(name) for name in INSTANCES])

    assert await _found(index, QueryLevel.IMAGE, ("00191010", "FAST")) == ["a"]
    assert await _found(index, QueryLevel.IMAGE, ("00191010", "*S*")) == ["a", "b"]
    assert await _found(index, QueryLevel.IMAGE, ("00191011", "12")) == ["a", "b"]
    assert await _found(index, QueryLevel.IMAGE, ("00191011", "7")) == ["b"]
    in_january = await _found(index, QueryLevel.IMAGE, ("AcquisitionDate", "20240101-20240131"))
    assert in_january == ["a", "c", "d", "b"]  # InstanceNumber, then UID
    assert await _found(index, QueryLevel.IMAGE, ("AcquisitionDate", "-20231231")) == []
    both = await _found(index, QueryLevel.IMAGE, ("00191010", "SLOW"), ("Manufacturer", "GE*"))
    assert both == ["b"]
    with pytest.raises(QueryError, match="00191012"):
        await _found(index, QueryLevel.IMAGE, ("00191012", "x"))
    with pytest.raises(QueryError, match="00191010"):
        await _found(index, QueryLevel.SERIES, ("00191010", "FAST"))


async def test_replaced_instance_replaces_its_values(index: IndexUnderTest) -> None:
    await index.store_instances([_write(name) for name in INSTANCES])

    await index.store_instances([_write("a", text="SLOWER", policy=DuplicatePolicy.REPLACE)])

    assert await _found(index, QueryLevel.IMAGE, ("00191010", "FAST")) == []
    assert await _found(index, QueryLevel.IMAGE, ("00191010", "SLOW*")) == ["a", "b"]


async def test_other_tenant_has_no_values(index: IndexUnderTest) -> None:
    await index.store_instances([_write(name) for name in INSTANCES])

    query = parse_qido(QueryLevel.IMAGE, [("00191010", "FAST")], known={}, extended=TAGS)
    assert await index.search_instances("t2", query) == []


async def test_numbers_match_by_value_not_by_spelling(index: IndexUnderTest) -> None:
    """DS, FL and SL extended tags: single value matching on the number (PS3.4
    C.2.2.2.1), whatever its spelling; no wildcards or ranges on numbers (C.2.2.2.4)."""
    await index.store_instances([_write(name) for name in INSTANCES])

    assert await _found(index, QueryLevel.IMAGE, ("SliceThickness", "1.5")) == ["a", "c"]
    assert await _found(index, QueryLevel.IMAGE, ("00180050", "1.500")) == ["a", "c"]
    assert await _found(index, QueryLevel.IMAGE, ("SliceThickness", "2.0")) == ["b"]
    assert await _found(index, QueryLevel.IMAGE, ("SliceThickness", "3")) == []
    # FL: 0.1 typed by a user finds the single-precision 0.1 stored; c's block is
    # another creator's, so its (0019,xx12) is not this tag.
    assert await _found(index, QueryLevel.IMAGE, ("00191012", "0.1")) == ["a"]
    assert await _found(index, QueryLevel.IMAGE, ("00191012", "2.5")) == ["b"]
    assert await _found(index, QueryLevel.IMAGE, ("00191013", "-5")) == ["a"]
    assert await _found(index, QueryLevel.IMAGE, ("00191013", "70000")) == ["b"]
    for key, value in (
        ("SliceThickness", "1*"),
        ("SliceThickness", "1.5-2"),
        ("SliceThickness", "thin"),
        ("00191012", "nan"),
        ("00191013", "1.5"),
        ("00191013", str(1 << 63)),
    ):
        with pytest.raises(QueryError, match=key):
            await _found(index, QueryLevel.IMAGE, (key, value))


def _procedures(*codes: str) -> str:
    """Study JSON with a ProcedureCodeSequence item per code (PS3.18 F.2)."""
    items: list[dict[str, Any]] = [
        {"00080100": {"vr": "SH", "Value": [code]}, "00080102": {"vr": "SH", "Value": ["L"]}}
        for code in codes
    ]
    return json.dumps({"00081032": {"vr": "SQ", "Value": items}})


STUDIES = {"head": ("CT-HEAD",), "both": ("XR-CHEST", "CT-HEAD"), "none": ()}


async def _studies(index: IndexUnderTest, *query: tuple[str, str]) -> list[str]:
    parsed = parse_qido(QueryLevel.STUDY, query, known=SEARCH_KEYS[QueryLevel.STUDY], extended=TAGS)
    names = {f"{STUDY}.{n}": name for n, name in enumerate(STUDIES, start=1)}
    found = await index.search_studies("t1", parsed)
    return sorted(names[r.study.study_instance_uid] for r in found)


async def test_one_item_matching_is_enough(index: IndexUnderTest) -> None:
    await index.store_instances(
        [
            write(
                f"{STUDY}.{n}.1",
                study=f"{STUDY}.{n}",
                series=f"{STUDY}.{n}.0",
                study_attrs={"attributes": _procedures(*codes) if codes else None},
            )
            for n, codes in enumerate(STUDIES.values(), start=1)
        ]
    )

    assert await _studies(index, ("ProcedureCodeSequence.CodeValue", "XR-CHEST")) == ["both"]
    assert await _studies(index, ("ProcedureCodeSequence.CodeValue", "CT-HEAD")) == [
        "both",
        "head",
    ]
    assert await _studies(index, ("00081032.00080100", "CT*")) == ["both", "head"]
    assert await _studies(index, ("ProcedureCodeSequence.CodeValue", "MR*")) == []
    with pytest.raises(QueryError, match="extended query tag"):
        await _studies(index, ("ProcedureCodeSequence.CodingSchemeDesignator", "L"))
    with pytest.raises(QueryError, match="NoSuchSequence"):
        await _studies(index, ("NoSuchSequence.CodeValue", "L"))
