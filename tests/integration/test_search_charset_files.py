"""pydicom's character set test files stored over STOW-RS, then found by QIDO-RS and by
C-FIND by their names as users type them: exact, with wildcards, and with fuzzy matching
(QIDO-RS ``fuzzymatching=true``, PS3.18 8.3.4.1; PS3.4 C.2.2.2.6)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from conftest import LocalDimse
from dicomcloud.dimse.find import STUDY_ROOT_FIND

pytestmark = pytest.mark.timeout(120)

#: file -> PatientID (the files that share UIDs with another are left out)
FILES = {
    "chrArab.dcm": "SCSARAB",
    "chrFren.dcm": "SCSFREN",
    "chrGerm.dcm": "SCSGERM",
    "chrGreek.dcm": "SCSGREEK",
    "chrH31.dcm": "H31EXAMPLE",
    "chrH32.dcm": "H32EXAMPLE",
    "chrHbrw.dcm": "SCSHBRW",
    "chrI2.dcm": "I2EXAMPLE",
    "chrJapMulti.dcm": "2008-4",
    "chrKoreanMulti.dcm": "2008-3",
    "chrRuss.dcm": "SCSRUSS",
    "chrX1.dcm": "X1EXAMPLE",
    "chrX2.dcm": "X2EXAMPLE",
}

# (PatientName as typed, fuzzy, PatientIDs found)
CASES = [
    ("Buc^Jérôme", False, {"SCSFREN"}),
    ("Buc^Jerome", False, set()),
    ("buc^jerome", True, {"SCSFREN"}),
    ("Äneas^Rüdiger", False, {"SCSGERM"}),
    ("aneas*", True, {"SCSGERM"}),
    ("Διονυσιος", False, {"SCSGREEK"}),
    ("ΔΙΟΝΎΣΙΟΣ", True, {"SCSGREEK"}),
    ("山田^太郎", False, {"H31EXAMPLE", "H32EXAMPLE"}),
    ("やまだ*", False, {"H31EXAMPLE", "H32EXAMPLE", "2008-4"}),
    ("ヤマダ^タロウ", True, {"H32EXAMPLE"}),
    ("yamada^tarou", True, {"H31EXAMPLE"}),
    ("홍^길동", False, {"I2EXAMPLE"}),
    ("hong^gildong", True, {"I2EXAMPLE"}),
    ("김희중", False, {"2008-3"}),
    ("김?중", True, {"2008-3"}),
    ("Люкceмбypг", False, {"SCSRUSS"}),
    ("люк*", True, {"SCSRUSS"}),
    ("قباني^لنزار", False, {"SCSARAB"}),
    ("שרון^דבורה", False, {"SCSHBRW"}),
    ("王^小*", False, {"X1EXAMPLE", "X2EXAMPLE"}),
    ("王^小东", False, {"X2EXAMPLE"}),
    ("WANG^XIAODONG", True, {"X1EXAMPLE", "X2EXAMPLE"}),
]


def _files() -> list[bytes]:
    paths = {Path(p).name: Path(p) for p in get_charset_files("chr*.dcm")}
    return [paths[name].read_bytes() for name in FILES]


async def _stored(dimse: LocalDimse) -> None:
    response = await dimse.local.stow(_files())
    # 202: a warning for one file's descriptive value; none failed (no 0008,1198).
    assert response.status_code in (200, 202), response.status_code
    assert "00081198" not in response.json()
    assert len(response.json()["00081199"]["Value"]) == len(FILES)


async def _qido(dimse: LocalDimse, name: str, fuzzy: bool) -> set[str]:
    params = {"PatientName": name, "fuzzymatching": "true" if fuzzy else "false"}
    response = await dimse.local.client.get("/dicom-web/studies", params=params)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return {item["00100020"]["Value"][0] for item in body}


def _c_find(port: int, ds: Dataset) -> list[Dataset]:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(STUDY_ROOT_FIND, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMCLOUD")
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_find(ds, STUDY_ROOT_FIND))
    finally:
        assoc.release()
    *pending, (final, _) = responses
    assert final.Status == 0x0000, final
    return [found for _, found in pending if found is not None]


async def test_names_as_typed_over_qido_rs(dimse: LocalDimse) -> None:
    await _stored(dimse)

    for name, fuzzy, expected in CASES:
        assert await _qido(dimse, name, fuzzy) == expected, (name, fuzzy)


@pytest.mark.parametrize(
    ("charset", "name", "expected"),
    [
        ("ISO_IR 192", "山田^太郎", {"H31EXAMPLE", "H32EXAMPLE"}),
        (["", "ISO 2022 IR 87"], "やまだ*", {"H31EXAMPLE", "H32EXAMPLE", "2008-4"}),
        (["", "ISO 2022 IR 149"], "김희중", {"2008-3"}),
        ("ISO_IR 100", "Buc^J?r?me", {"SCSFREN"}),
        ("ISO_IR 144", "Люкceмбypг", {"SCSRUSS"}),
        ("GB18030", "王^小东", {"X2EXAMPLE"}),
    ],
)
async def test_names_over_c_find_in_the_scus_character_set(
    dimse: LocalDimse, charset: str | list[str], name: str, expected: set[str]
) -> None:
    """The SCU encodes the identifier in its own character set (PS3.5 6.1); the
    archive decodes it and answers in UTF-8."""
    await _stored(dimse)
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = name
    ds.PatientID = ""

    found = await asyncio.to_thread(_c_find, dimse.port, ds)

    assert {item.PatientID for item in found} == expected
    assert await _qido(dimse, name, fuzzy=False) == expected
