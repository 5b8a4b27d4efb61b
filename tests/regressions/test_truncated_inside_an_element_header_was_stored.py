"""Regression: an object cut inside the header of an element (fewer bytes left than a
header) was read by pydicom without a word and stored as if complete.  Found by hand:
the first 3,000 bytes of CT_small.dcm were accepted over STOW-RS."""

from __future__ import annotations

import pytest

from conftest import LocalArchive
from integration.support import pydicom_file

FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"


@pytest.mark.parametrize("cut", [2990, 2996, 3000])
async def test_an_object_cut_inside_an_element_header_is_rejected(
    local: LocalArchive, cut: int
) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()[:cut]

    response = await local.stow([data])

    assert response.status_code == 409, response.text
    (failed,) = response.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert failed[FAILURE_REASON]["Value"] == [0xC000]
    assert "truncated" in response.headers["warning"]
    assert not local.files()
