"""The SQL query engine matches exactly like the in-memory reference (PS3.4 C.2.2.2):
hypothesis draws QIDO-RS queries (wildcards with characters that are special to LIKE
and GLOB, person names per component group, fuzzy matching, DA/TM ranges with their
precision and across midnight, combined date-time ranges, UID lists) and every one
must find the same studies, in the same order, on SQLite, PostgreSQL and MySQL as on
``MemoryIndex``."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import backends
from contract.records import STUDY, write
from dicomcloud.domain.query import Query, QueryError, QueryLevel, parse_qido
from dicomcloud.index.memory_index import MemoryIndex
from dicomcloud.services.query import STUDY_SEARCH_KEYS

pytestmark = pytest.mark.timeout(600)

#: Characters of names and accession numbers: case and accents (fuzzy matching), the
#: PN delimiters, and what LIKE, GLOB and our escape character treat specially.
ALPHABET = "aAáÁbBéE^= %_[]!*?\\ß"
TEXT = "aAáÁbBéE%_[]!ß"
STUDIES = 40
NAMES: list[str] = []
ACCESSIONS: list[str] = []


def _text(rng: random.Random, chars: str, size: int) -> str:
    return "".join(rng.choice(chars) for _ in range(rng.randint(1, size)))


def _writes() -> list[object]:
    rng = random.Random(20261122)
    found = []
    NAMES.clear()
    ACCESSIONS.clear()
    for n in range(STUDIES):
        study = f"{STUDY}.{n}"
        name = "=".join(
            _text(rng, TEXT.replace("=", "") + "^", 5) for _ in range(rng.randint(1, 3))
        )
        day = rng.choice([None, "20240101", "20240102", "20240103", "20231231"])
        time = rng.choice(
            [None, "000000", "010000", "115959.999999", "120000", "120000.500000", "235959"]
        )
        accession = _text(rng, TEXT, 6) if n % 5 else None
        if n % 2 and ACCESSIONS:
            # a twin of the previous value that a wrongly escaped LIKE wildcard (_ or %)
            # would also match: one study too many
            old, new = ("_", "a") if n % 4 == 1 else ("%", "ab")
            accession = ACCESSIONS[-1].replace(old, new)
            name = NAMES[-1].replace(old, new)
        NAMES.append(name)
        ACCESSIONS.append(accession or "x")
        found.append(
            write(
                f"{study}.1.1",
                study=study,
                series=f"{study}.1",
                patient_id=f"P{n}",
                patient={"patient_name": name},
                study_attrs={
                    "study_date": day,
                    "study_time": time,
                    "accession_number": accession,
                },
            )
        )
    return found


_TIMES = st.sampled_from(["", "00", "01", "0100", "115959", "12", "1200", "120000.5", "2359"])
_DATES = st.sampled_from(["", "20231231", "20240101", "20240102", "20240103"])
_PATTERNS = st.text(alphabet=ALPHABET.replace("\\", ""), min_size=1, max_size=5)


@st.composite
def _near(draw: st.DrawFn, values: list[str]) -> str:
    """A stored value or one of its component groups, exactly, with one character made
    wild or its case changed, or cut short with ``*``: queries that do match."""
    value = draw(st.sampled_from(values))
    if "=" in value and draw(st.booleans()):
        value = draw(st.sampled_from(value.split("=")))
    index = draw(st.integers(0, len(value) - 1))
    mode = draw(st.sampled_from(["exact", "one", "case", "prefix"]))
    if mode == "one":
        return value[:index] + "?" + value[index + 1 :]
    if mode == "case":
        return value[:index] + value[index].swapcase() + value[index + 1 :]
    if mode == "prefix":
        return value[:index] + "*"
    return value


@st.composite
def _queries(draw: st.DrawFn) -> list[tuple[str, str]]:
    """One or two matching keys (more rarely match anything), maybe fuzzy, maybe paged."""
    keys = draw(
        st.lists(
            st.sampled_from(
                ["PatientName", "AccessionNumber", "StudyDate", "StudyTime", "UIDs", "PatientID"]
            ),
            min_size=1,
            max_size=2,
            unique=True,
        )
    )
    params: list[tuple[str, str]] = []
    for key in keys:
        if key == "PatientName":
            params.append((key, draw(_near(NAMES) | _PATTERNS)))
        elif key == "AccessionNumber":
            params.append((key, draw(_near(ACCESSIONS) | _PATTERNS)))
        elif key == "StudyDate":
            params.append((key, f"{draw(_DATES)}-{draw(_DATES)}"))
        elif key == "StudyTime":
            params.append((key, f"{draw(_TIMES)}-{draw(_TIMES)}"))
        elif key == "UIDs":
            numbers = draw(st.lists(st.integers(0, STUDIES + 2), min_size=1, max_size=4))
            params.append(("StudyInstanceUID", ",".join(f"{STUDY}.{n}" for n in numbers)))
        else:
            params.append((key, draw(st.sampled_from(["P1", "P*", "p1", "P?"]))))
    if draw(st.booleans()):
        params.append(("fuzzymatching", "true"))
    if draw(st.integers(0, 3)) == 0:
        params.append(("limit", str(draw(st.integers(1, 10)))))
        params.append(("offset", str(draw(st.integers(0, 10)))))
    return params


def _parse(params: list[tuple[str, str]]) -> Query | None:
    try:
        return parse_qido(QueryLevel.STUDY, params, known=STUDY_SEARCH_KEYS)
    except QueryError:
        return None


@pytest.mark.parametrize("backend", backends.params(backends.SQL_BACKENDS))
def test_sql_matches_like_the_reference(backend: str, tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_compare(backend, tmp_path, loop))
    finally:
        loop.close()


async def _compare(backend: str, tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    reference = MemoryIndex()
    await reference.store_instances(_writes())  # type: ignore[arg-type]
    async with backends.open_index(backend, tmp_path) as sql:
        await sql.store_instances(_writes())  # type: ignore[arg-type]

        examples = 300 if backend == "sqlite" else 120

        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
            database=None,
        )
        @given(_queries())
        def check(params: list[tuple[str, str]]) -> None:
            query = _parse(params)
            assume(query is not None)
            assert query is not None
            expected = asyncio.run_coroutine_threadsafe(
                reference.search_studies("t1", query), loop
            ).result()
            found = asyncio.run_coroutine_threadsafe(sql.search_studies("t1", query), loop).result()
            assert [r.study.study_instance_uid for r in found] == [
                r.study.study_instance_uid for r in expected
            ], params

        await asyncio.to_thread(check)
