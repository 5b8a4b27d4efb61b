"""The viewer-ready transcoder's parts without a bus: its settings (TOML and the
environment), the keys of its copies, the source fingerprint, and the pixel check."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomcloud.config import load_settings
from dicomcloud.domain.derived import source_version
from dicomcloud.domain.records import InstanceRecord
from dicomcloud.errors import ConfigurationError
from dicomcloud.services import syntaxes as ts
from dicomcloud.services.transcode import transcode_part10
from dicomcloud.services.viewer_ready import TranscodeFailed, convert
from dicomcloud.storage.keys import check_key, derived_key, instance_key


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("DICOMCLOUD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_the_transcoder_is_off_by_default(tmp_path: Path) -> None:
    transcoder = load_settings(data_dir=tmp_path).workers.transcoder

    assert not transcoder.enabled
    assert transcoder.target == ts.EXPLICIT_VR_LE
    assert ts.JPEG_LS_LOSSLESS in transcoder.sources
    assert ts.EXPLICIT_VR_LE not in transcoder.sources


def test_toml_and_environment_configure_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "dicomcloud.toml"
    config.write_text(
        f'[workers.transcoder]\nenabled = true\nsources = ["*"]\ntarget = "{ts.HTJ2K_LOSSLESS}"\n'
    )
    monkeypatch.setenv("DICOMCLOUD_WORKERS__TRANSCODER__CONCURRENCY", "3")

    transcoder = load_settings(config).workers.transcoder

    assert (transcoder.enabled, transcoder.sources) == (True, ("*",))
    assert (transcoder.target, transcoder.concurrency) == (ts.HTJ2K_LOSSLESS, 3)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("target", ts.JPEG_BASELINE, "lossy"),
        ("target", ts.HTJ2K, "lossy"),
        ("target", "1.2.840.10008.1.2.4.100", "archive can encode"),  # MPEG-2
        ("target", "jpeg", "archive can encode"),
        ("sources", ["1.2.x"], "not a transfer syntax UID"),
    ],
)
def test_bad_values_are_refused_naming_the_key(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=rf"workers\.transcoder\.{field}.*{message}"):
        load_settings(data_dir=tmp_path, **{f"workers__transcoder__{field}": value})


def test_copy_keys_never_meet_instance_keys() -> None:
    args = ("t1", "1.2.3", "1.2.3.4", "1.2.3.4.5")

    key = derived_key(*args, ts.HTJ2K_LOSSLESS, "0123456789abcdef")

    assert key == "t1/1.2.3/1.2.3.4/1.2.3.4.5.derived/1.2.840.10008.1.2.4.201.0123456789abcdef.dcm"
    assert check_key(key)[3] == "1.2.3.4.5.derived"  # a folder no instance key has
    assert check_key(instance_key(*args))[3] == "1.2.3.4.5.dcm"
    long_uid = "1." + "2" * 62
    assert check_key(derived_key("t" * 64, long_uid, long_uid, long_uid, long_uid, "f" * 16))
    with pytest.raises(ValueError, match="invalid UID"):
        derived_key(*args, "../x", "0123456789abcdef")


def test_the_source_fingerprint_follows_the_stored_object() -> None:
    record = InstanceRecord("t1", "1.2", "1.2.3", "1.2.3.4", "1.2.840.10008.5.1.4.1.1.4",
                            ts.RLE_LOSSLESS, "t1/a.dcm", 100, rows=64, columns=64)  # fmt: skip

    same = source_version(replace(record, instance_number=7))  # not about the pixels

    assert same == source_version(record)
    assert source_version(replace(record, size=101)) != same
    assert source_version(replace(record, blob_key="t1/b.dcm")) != same
    assert source_version(replace(record, transfer_syntax_uid=ts.JPEG_LS_LOSSLESS)) != same


@pytest.mark.parametrize("target", [ts.EXPLICIT_VR_LE, ts.HTJ2K_LOSSLESS, ts.JPEG_LS_LOSSLESS])
@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm"])
def test_convert_keeps_every_pixel(name: str, target: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    data = Path(str(path)).read_bytes()

    out = convert(data, target, verify=True)

    assert dcmread(io.BytesIO(out)).file_meta.TransferSyntaxUID == target
    assert np.array_equal(dcmread(io.BytesIO(out)).pixel_array, dcmread(path).pixel_array)


def test_convert_refuses_a_copy_with_other_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    path = get_testdata_file("MR_small_RLE.dcm")
    assert path is not None
    data = Path(str(path)).read_bytes()

    def shifted(source: bytes, target: str) -> bytes:
        ds = dcmread(io.BytesIO(transcode_part10(source, target)))
        arr = ds.pixel_array.copy()
        arr[0, 0] += 1
        ds.PixelData = arr.tobytes()
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()

    monkeypatch.setattr("dicomcloud.services.viewer_ready.transcode_part10", shifted)

    with pytest.raises(TranscodeFailed, match="does not decode to the original's pixels"):
        convert(data, ts.EXPLICIT_VR_LE, verify=True)
