"""Bug: a multipart/related body with a preamble before its first boundary (allowed by
RFC 2046 5.1.1, to be ignored) was refused with 400 "malformed multipart body".

Fixed in dicomweb/multipart.py (``_skip_preamble``).
"""

from __future__ import annotations

from conftest import LocalArchive
from integration.support import multipart_related, new_instance


async def test_preamble_is_ignored(local: LocalArchive) -> None:
    instance = new_instance()
    body, content_type = multipart_related([instance.data])

    response = await local.client.post(
        "/dicom-web/studies",
        content=b"This is a preamble, not a part.\r\n" + body,
        headers={"Content-Type": content_type},
    )

    assert response.status_code == 200, response.text
    assert await local.retrieve_bytes(instance.path) == instance.data
