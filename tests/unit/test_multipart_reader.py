"""Streaming multipart/related reading (RFC 2046 5.1, RFC 2387, PS3.18 8.6.1.2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomcloud.dicomweb.multipart import MultipartReader, Part
from dicomcloud.errors import BadRequest, PayloadTooLarge

BOUNDARY = "b0und4ry"


def body(
    *parts: tuple[dict[str, str], bytes], preamble: bytes = b"", epilogue: bytes = b""
) -> bytes:
    out = preamble
    for headers, data in parts:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        out += f"--{BOUNDARY}\r\n{head}\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode() + epilogue


def reader(tmp_path: Path, *, threshold: int = 1 << 20, limit: int = 1 << 30) -> MultipartReader:
    return MultipartReader(
        BOUNDARY, spool_threshold=threshold, spool_dir=tmp_path / "spool", max_part_bytes=limit
    )


def read_all(r: MultipartReader, data: bytes, step: int) -> list[Part]:
    parts: list[Part] = []
    for start in range(0, len(data), step):
        r.feed(data[start : start + step])
        parts.extend(r.take())
    r.close()
    return parts + r.take()


def content(part: Part) -> bytes:
    if part.data is not None:
        return part.data
    assert part.path is not None
    return part.path.read_bytes()


# Payloads that look like delimiters without being one (no CRLF before the dashes).
TRICKY = [b"", b"--" + BOUNDARY.encode() + b"x", bytes(range(256)) * 3, b"\r\n-\r\n--"]


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_parts_survive_any_chunking(tmp_path: Path, step: int) -> None:
    data = body(
        *[({"Content-Type": "application/dicom"}, payload) for payload in TRICKY],
        preamble=b"ignored --" + BOUNDARY.encode() + b" preamble\r\n",
        epilogue=b"ignored epilogue",
    )

    parts = read_all(reader(tmp_path), data, step)

    assert [content(p) for p in parts] == TRICKY
    assert all(p.content_type == "application/dicom" for p in parts)
    assert [p.size for p in parts] == [len(t) for t in TRICKY]


def test_headers_are_case_insensitive_and_kept(tmp_path: Path) -> None:
    data = body(({"CONTENT-TYPE": "application/dicom", "Content-ID": "<a@b>"}, b"x"))

    (part,) = read_all(reader(tmp_path), data, 3)

    assert part.headers == {"content-type": "application/dicom", "content-id": "<a@b>"}


def test_large_parts_spool_to_disk_and_are_discarded(tmp_path: Path) -> None:
    big, small = b"\x01" * 10_000, b"\x02" * 10
    data = body(({}, big), ({}, small))

    parts = read_all(reader(tmp_path, threshold=1000), data, 999)

    assert parts[0].data is None and parts[0].path is not None
    assert parts[0].path.parent == tmp_path / "spool"
    assert content(parts[0]) == big
    assert parts[1].data == small
    spooled = parts[0].path
    for part in parts:
        part.discard()
    assert not spooled.exists()
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_part_over_the_limit_is_dropped_alone_and_cleaned_up(tmp_path: Path) -> None:
    """The oversized part is flagged (its bytes are not kept, its spool file is gone);
    the parts after it are read as usual."""
    r = reader(tmp_path, threshold=100, limit=1000)
    data = body(({}, b"\x00" * 5000), ({}, b"next part"))

    parts = read_all(r, data, 300)

    assert [(p.too_large, p.size) for p in parts] == [(True, 5000), (False, 9)]
    assert parts[0].data is None and parts[0].path is None
    assert content(parts[1]) == b"next part"
    assert list((tmp_path / "spool").iterdir()) == []


def test_more_parts_than_allowed_is_payload_too_large(tmp_path: Path) -> None:
    r = MultipartReader(
        BOUNDARY,
        spool_threshold=100,
        spool_dir=tmp_path / "spool",
        max_part_bytes=1000,
        max_parts=2,
    )
    data = body(({}, b"one"), ({}, b"two"), ({}, b"three"))

    with pytest.raises(PayloadTooLarge, match="more than 2 parts"):
        read_all(r, data, 7)


def test_truncated_body_is_a_bad_request(tmp_path: Path) -> None:
    data = body(({}, b"payload"))
    r = reader(tmp_path)
    r.feed(data[: len(data) - 10])

    with pytest.raises(BadRequest, match="truncated"):
        r.close()


def test_body_without_the_boundary_is_a_bad_request(tmp_path: Path) -> None:
    r = reader(tmp_path)
    r.feed(b"--some-other-boundary\r\n\r\ndata\r\n--some-other-boundary--\r\n")

    with pytest.raises(BadRequest, match="boundary"):
        r.close()


def test_empty_body_is_a_bad_request(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="no multipart body part"):
        reader(tmp_path).close()


@pytest.mark.parametrize("boundary", ["", "x" * 71])
def test_boundary_length_limits(tmp_path: Path, boundary: str) -> None:
    with pytest.raises(BadRequest, match="1-70"):
        MultipartReader(boundary, spool_threshold=0, spool_dir=tmp_path, max_part_bytes=10)
