"""Bug: the SOP UIDs were read through pydicom's value conversion, which validates
them: an invalid UID raised (pydicom ``reading_validation_mode = RAISE``) or warned
(the default; an error under ``-W error``) out of the ingest service: STOW-RS 500.

Fixed in services/part10.py (``element_text`` reads the raw value; ``build_header``
validates with the domain's UID rules) and services/ingest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom import config as pydicom_config

from conftest import LocalArchive
from integration.support import (
    STATUS_CANNOT_UNDERSTAND,
    failure_reasons,
    new_dataset,
    new_instance,
    raw_part10,
    set_raw,
)


@pytest.fixture
def strict_pydicom() -> Iterator[None]:
    saved = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.RAISE
    try:
        yield
    finally:
        pydicom_config.settings.reading_validation_mode = saved


@pytest.mark.usefixtures("strict_pydicom")
@pytest.mark.parametrize("bad_uid", ["1.2.03", "../../x", "1.2.3.x"])
async def test_invalid_sop_instance_uid_is_409(local: LocalArchive, bad_uid: str) -> None:
    ds = new_dataset()
    set_raw(ds, "SOPInstanceUID", bad_uid)
    data = raw_part10(ds)
    good = new_instance()

    response = await local.stow([data, good.data])

    assert response.status_code == 202, response.text
    assert failure_reasons(response.json()) == [STATUS_CANNOT_UNDERSTAND]
    assert "SOPInstanceUID" in response.headers["warning"]
    assert await local.retrieve_bytes(good.path) == good.data
