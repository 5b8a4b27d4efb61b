"""Bug: the truncation check iterated the dataset with ``get_item``, which reads every
deferred (large) value into memory - defeating ``defer_size`` for big pixel data - and
converted elements outside the warnings guard, so ``no_meta.dcm`` (garbage lengths)
leaked a pydicom UserWarning (a 500 under ``-W error``) instead of a rejection.

Fixed in services/part10.py ``_check_complete`` (``keep_deferred``; deflated files,
whose offsets are in the inflated stream, still read their values).
"""

from __future__ import annotations

from pydicom.dataelem import RawDataElement

from conftest import LocalArchive
from dicomcloud.services.part10 import DEFER_SIZE, parse_part10
from integration.support import (
    STATUS_CANNOT_UNDERSTAND,
    failure_reasons,
    new_instance,
    pydicom_file,
    referenced_items,
)


def test_large_pixel_data_stays_deferred() -> None:
    big = new_instance(pixels=4 * DEFER_SIZE)

    parsed = parse_part10(big.data)

    pixel_data = parsed.dataset.get_item(0x7FE00010, keep_deferred=True)
    assert isinstance(pixel_data, RawDataElement)
    assert pixel_data.value is None  # not read into memory by the check
    assert pixel_data.length == 4 * DEFER_SIZE


async def test_garbage_lengths_are_rejected_not_crashed(local: LocalArchive) -> None:
    # No preamble, a plausible first element, then a length far past the end.
    garbage = (
        b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"
        + b"\x08\x00\x16\x00UI\xf0\x7f"
        + b"1.2.840.10008.5.1.4.1.1.7\x00"
    )

    response = await local.stow([garbage])

    assert response.status_code == 409
    assert failure_reasons(response.json()) == [STATUS_CANNOT_UNDERSTAND]
    assert "truncated" in response.headers["warning"]


async def test_file_starting_inside_an_element_is_not_dicom(local: LocalArchive) -> None:
    # pydicom's no_meta.dcm starts one byte into an element.
    response = await local.stow([pydicom_file("no_meta.dcm").read_bytes()])

    assert response.status_code == 409
    assert failure_reasons(response.json()) == [STATUS_CANNOT_UNDERSTAND]
    assert "not a DICOM object" in response.headers["warning"]


async def test_truncated_large_value_is_rejected(local: LocalArchive) -> None:
    big = new_instance(pixels=4 * DEFER_SIZE)

    response = await local.stow([big.data[:-1000]])

    assert response.status_code == 409
    assert "truncated" in response.headers["warning"]


async def test_deflated_file_is_still_stored(local: LocalArchive) -> None:
    data = pydicom_file("image_dfl.dcm").read_bytes()

    response = await local.stow([data])

    assert response.status_code == 200, response.text
    (item,) = referenced_items(response.json())
    url = item["00081190"]["Value"][0].removeprefix("http://testserver/dicom-web")
    assert await local.retrieve_bytes(url) == data
