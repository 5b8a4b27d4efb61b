"""A value whose length does not fit its VR (a 3-byte UL) made pydicom raise
BytesLengthException, which escaped parsing: STOW-RS answered 500.  Found by
tests/property/test_fuzz_parsers.py.  Now the part fails alone with 0xC000."""

from __future__ import annotations

import struct

from conftest import LocalArchive
from integration.support import failure_reasons, new_instance

STATUS_CANNOT_UNDERSTAND = 0xC000


async def test_wrong_length_group_length_is_rejected_not_a_500(local: LocalArchive) -> None:
    good = new_instance()
    data = new_instance().data
    # (0002,0000) File Meta Information Group Length, UL, with a 3-byte value.
    bad = data[:132] + struct.pack("<HH", 2, 0) + b"UL" + struct.pack("<H", 3) + b"\x01\x02\x03"
    bad += data[144:]

    response = await local.stow([bad, good.data])

    assert response.status_code == 202, response.text
    assert failure_reasons(response.json()) == [STATUS_CANNOT_UNDERSTAND]
    assert "bytes per value" in response.headers["warning"]
    assert await local.retrieve_bytes(good.path) == good.data
