"""Fuzzing (hypothesis) of what the archive parses from the network: the multipart
reader of STOW-RS, QIDO-RS query parameters through the whole route, and DICOM objects
(PS3.10 files and DIMSE datasets).  Only the documented exceptions may escape, and HTTP
answers are never 5xx."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from conftest import ArchiveFactory
from dicomcloud.dicomweb.multipart import MultipartReader
from dicomcloud.errors import BadRequest, DicomCloudError, InstanceRejected, PayloadTooLarge
from dicomcloud.services.ingest import IngestContext
from dicomcloud.services.part10 import parse_dataset, parse_part10
from dicomcloud.services.query import SEARCH_KEYS
from integration.support import dataset_bytes, multipart_related, new_instance

pytestmark = pytest.mark.timeout(300)

FIXTURE_OK = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BOUNDARY = "fuzzboundary0123"


def _raised(call: Callable[[], object], *allowed: type[DicomCloudError]) -> DicomCloudError | None:
    """The allowed exception ``call`` raised, or None; any other one propagates."""
    try:
        call()
    except allowed as exc:
        return exc
    return None


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[last:point])
        last = point
    return [p for p in pieces if p]


def _read(body: bytes, cuts: list[int], tmp_path: Path, **limits: int) -> list[bytes]:
    reader = MultipartReader(
        BOUNDARY,
        spool_threshold=limits.get("threshold", 64),
        spool_dir=tmp_path / "spool",
        max_part_bytes=limits.get("max_part", 1 << 20),
        max_parts=limits.get("max_parts"),
    )
    parts = []
    for chunk in _chunks(body, cuts):
        reader.feed(chunk)
        parts.extend(reader.take())
    reader.close()
    parts.extend(reader.take())
    out = []
    for part in parts:
        out.append(part.data if part.data is not None else part.path.read_bytes())  # type: ignore[union-attr]
        part.discard()
    return out


# -- multipart ----------------------------------------------------------------------------

delimiter_like = st.sampled_from(
    [b"--", b"\r\n", b"--" + BOUNDARY.encode(), b"\r\n--" + BOUNDARY.encode()[:-1], b"\r"]
)
payloads = st.lists(st.one_of(st.binary(max_size=200), delimiter_like), max_size=8).map(b"".join)


@FIXTURE_OK
@given(
    parts=st.lists(payloads, min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
    preamble=st.sampled_from([b"", b"preamble text\r\n", b"\r\n"]),
)
def test_well_formed_bodies_come_back_part_for_part(
    tmp_path: Path, parts: list[bytes], cuts: list[int], preamble: bytes
) -> None:
    """Whatever the content (delimiter look-alikes too) and however the body is cut."""
    assume(all(f"\r\n--{BOUNDARY}".encode() not in b"\r\n" + p + b"\r\n" for p in parts))
    body, _ = multipart_related(parts, BOUNDARY)
    assert _read(preamble + body, cuts, tmp_path) == parts


@FIXTURE_OK
@given(
    body=st.one_of(
        st.binary(max_size=2000),
        st.lists(st.one_of(st.binary(max_size=50), delimiter_like), max_size=30).map(b"".join),
    ),
    cuts=st.lists(st.integers(0, 2000), max_size=10),
    max_part=st.integers(1, 500),
    max_parts=st.one_of(st.none(), st.integers(1, 3)),
)
def test_any_body_is_read_or_refused_with_a_4xx_reason(
    tmp_path: Path, body: bytes, cuts: list[int], max_part: int, max_parts: int | None
) -> None:
    error = _raised(
        lambda: _read(body, cuts, tmp_path, max_part=max_part, max_parts=max_parts or 0),
        BadRequest,
        PayloadTooLarge,
    )
    assert error is None or (400 <= error.http_status < 500 and error.reason)
    leftovers = list((tmp_path / "spool").glob("*")) if (tmp_path / "spool").exists() else []
    assert leftovers == []  # nothing spooled is left behind


# -- DICOM parsing ------------------------------------------------------------------------

_SEED = new_instance().data


@st.composite
def damaged(draw: st.DrawFn, seed: bytes = _SEED) -> bytes:
    """A valid object with bytes flipped, cut, inserted or removed."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "length"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "length" and at + 4 <= len(data):  # a wild element length
            data[at : at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x80"]))
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(data=st.one_of(damaged(), st.binary(max_size=600)))
def test_part10_parsing_raises_only_instance_rejected(data: bytes) -> None:
    error = _raised(lambda: parse_part10(data), InstanceRejected)
    assert error is None or (error.dimse_status == 0xC000 and error.reason)


_DATASET = dataset_bytes(_SEED)


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(damaged(_DATASET), st.binary(max_size=400)),
    syntax=st.sampled_from(
        [
            ImplicitVRLittleEndian,
            ExplicitVRLittleEndian,
            ExplicitVRBigEndian,
            DeflatedExplicitVRLittleEndian,
        ]
    ),
    deflate=st.booleans(),
)
def test_dimse_dataset_parsing_raises_only_instance_rejected(
    data: bytes, syntax: str, deflate: bool
) -> None:
    if deflate and syntax == DeflatedExplicitVRLittleEndian:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
    error = _raised(lambda: parse_dataset(data, syntax), InstanceRejected)
    assert error is None or (error.dimse_status == 0xC000 and error.reason)


@FIXTURE_OK
@given(data=damaged())
async def test_ingest_answers_every_damaged_object(
    make_archive: ArchiveFactory, data: bytes
) -> None:
    """Through the whole ingest service: a result (stored or failed), never an exception."""
    global _FUZZ_ARCHIVE
    if _FUZZ_ARCHIVE.get("factory") is not make_archive:
        _FUZZ_ARCHIVE = {"factory": make_archive, "local": await make_archive()}
    local = _FUZZ_ARCHIVE["local"]
    context = IngestContext(tenant_id="default", source="STOW-RS")
    result = await local.archive.ingest.store_part10(data, context)
    if result.failure is not None:
        assert result.failure.reason


_FUZZ_ARCHIVE: dict[str, Any] = {}


# -- QIDO-RS query parameters -------------------------------------------------------------

_KEYS = sorted({k for keys in SEARCH_KEYS.values() for k in keys})
query_keys = st.one_of(
    st.sampled_from(
        [*_KEYS, "includefield", "limit", "offset", "fuzzymatching", "00100010", "0020000D"]
    ),
    st.text(max_size=12),
)
query_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["*", "?", "-", "20240101-", "-20240101", "1.2.3\\4.5", "all", "%", "_"]),
    st.from_regex(r"[0-9]{0,8}-?[0-9]{0,8}", fullmatch=True),
)


@FIXTURE_OK
@given(
    path=st.sampled_from(["/studies", "/series", "/instances", "/studies/1.2.3/series"]),
    params=st.lists(st.tuples(query_keys, query_values), max_size=6),
)
async def test_qido_query_parameters_never_5xx(
    make_archive: ArchiveFactory, path: str, params: list[tuple[str, str]]
) -> None:
    global _QIDO_ARCHIVE
    if _QIDO_ARCHIVE.get("factory") is not make_archive:
        local = await make_archive()
        instance = new_instance()
        assert (await local.stow([instance.data])).status_code == 200
        _QIDO_ARCHIVE = {"factory": make_archive, "local": local}
    local = _QIDO_ARCHIVE["local"]
    response = await local.client.get(f"/dicom-web{path}", params=params)
    assert response.status_code in (200, 400), (response.status_code, response.text)
    if response.status_code == 400:
        assert response.json()["error"]


_QIDO_ARCHIVE: dict[str, Any] = {}
