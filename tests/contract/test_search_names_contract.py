"""Person-name matching in every script (PS3.4 C.2.2.2: exact, wildcard, per component
group, and fuzzy: case, accents and width folded), identical on every backend.  The
names are those of pydicom's character set test files."""

from __future__ import annotations

import pytest

from backends import IndexUnderTest as Index
from dicomcloud.domain.query import QueryLevel, parse_qido
from dicomcloud.services.query import STUDY_SEARCH_KEYS

from .records import STUDY, write

NAMES = {
    "arab": "قباني^لنزار",
    "fren": "Buc^Jérôme",
    "germ": "Äneas^Rüdiger",
    "greek": "Διονυσιος",
    "h31": "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "h32": "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",
    "hbrw": "שרון^דבורה",
    "i2": "Hong^Gildong=洪^吉洞=홍^길동",
    "korean": "김희중",
    "russ": "Люкceмбypг",
    "x1": "Wang^XiaoDong=王^小東",
    "x2": "Wang^XiaoDong=王^小东",
    "german2": "STRASSE^Jörg",
}


async def seed(index: Index) -> None:
    writes = []
    for n, (key, name) in enumerate(NAMES.items(), start=1):
        study = f"{STUDY}.{n}"
        writes.append(
            write(
                f"{study}.1.1",
                study=study,
                series=f"{study}.1",
                patient_id=key,
                patient={"patient_name": name},
                study_attrs={"referring_physician_name": name},
            )
        )
    await index.store_instances(writes)


async def found(index: Index, key: str, value: str, fuzzy: bool) -> set[str]:
    params = [(key, value), ("fuzzymatching", "true" if fuzzy else "false")]
    query = parse_qido(QueryLevel.STUDY, params, known=STUDY_SEARCH_KEYS)
    return {r.study.patient_id for r in await index.search_studies("t1", query)}


EXACT = [
    *((name, {key}) for key, name in NAMES.items()),
    ("山田^太郎", {"h31", "h32"}),
    ("やまだ^たろう", {"h31", "h32"}),
    ("山田*", {"h31", "h32"}),
    ("*^たろう", {"h31", "h32"}),
    ("홍^길동", {"i2"}),
    ("김?중", {"korean"}),
    ("王^小?", {"x1", "x2"}),
    ("Wang^XiaoDong", {"x1", "x2"}),
    ("Buc^J?r?me", {"fren"}),
    ("Διον*", {"greek"}),
    ("Люк*", {"russ"}),
    ("*^لنزار", {"arab"}),
    ("שרון*", {"hbrw"}),
    ("ﾔﾏﾀﾞ*", {"h32"}),
    ("buc^jérôme", set()),  # case-sensitive without fuzzy matching
    ("Buc^Jerome", set()),  # accents too
    ("ヤマダ^タロウ", set()),  # and width
]

FUZZY = [
    ("buc^jerome", {"fren"}),
    ("BUC^JÉRÔME", {"fren"}),
    ("bu?^j*", {"fren"}),
    ("aneas^rudiger", {"germ"}),
    ("ÄNEAS*", {"germ"}),
    ("διονύσιος", {"greek"}),
    ("ΔΙΟΝΥΣΙΟΣ", {"greek"}),
    ("ヤマダ^タロウ", {"h32"}),  # full-width kana find the half-width name
    ("ﾔﾏﾀﾞ*", {"h32"}),
    ("yamada^tarou", {"h31"}),
    ("山田^太郎", {"h31", "h32"}),
    ("strasse^jorg", {"german2"}),
    ("Straße*", {"german2"}),
    ("김희중", {"korean"}),
    ("김?중", {"korean"}),
    ("люк*", {"russ"}),
    ("wang^xiaodong", {"x1", "x2"}),
    ("nobody*", set()),
]


@pytest.mark.parametrize(("value", "expected"), EXACT)
async def test_names_as_typed(index: Index, value: str, expected: set[str]) -> None:
    await seed(index)

    assert await found(index, "PatientName", value, fuzzy=False) == expected


@pytest.mark.parametrize(("value", "expected"), FUZZY)
@pytest.mark.parametrize("key", ["PatientName", "ReferringPhysicianName"])
async def test_fuzzy_names(index: Index, key: str, value: str, expected: set[str]) -> None:
    await seed(index)

    assert await found(index, key, value, fuzzy=True) == expected
