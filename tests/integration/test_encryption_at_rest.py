"""Encryption at rest as a user sees it: DICOMweb and DIMSE clients get back the bytes
they stored, the files on disk are not DICOM, a damaged file or a missing key is an
error (never other bytes), and ``dicomcloud storage rotate-keys`` re-encrypts."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from conftest import DICOMCLOUD, ArchiveFactory, LocalArchive, clean_environment, require
from dicomcloud.storage.encrypted import Header
from integration.support import new_instance, pydicom_file, split_multipart

pytestmark = pytest.mark.timeout(180)

KEY_1 = base64.b64encode(os.urandom(32)).decode()
KEY_2 = base64.b64encode(os.urandom(32)).decode()


def encrypted(active: str = "k1", **keys: str) -> dict[str, Any]:
    return {
        "storage__encryption": {
            "active_key_id": active,
            "keys": keys or {"k1": KEY_1},
        }
    }


def all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts]


async def test_wado_bytes_equal_stow_bytes_and_disk_holds_no_dicom(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(**encrypted())
    instance = new_instance()

    response = await local.stow([instance.data])
    assert response.status_code == 200, response.text

    assert await local.retrieve_bytes(instance.path) == instance.data
    [stored] = all_files(local.blobs_root)
    raw = stored.read_bytes()
    assert raw[128:132] != b"DICM"
    assert b"Test^Patient" not in raw
    assert instance.data[-64:] not in raw
    header = Header.parse(raw, "x")
    assert header is not None and header.key_id == "k1"
    # The instance metadata (patient name included) is sealed too.
    metadata = await local.retrieve(instance.path + "/metadata")
    assert metadata.status_code == 200
    assert metadata.json()[0]["00100010"]["Value"][0]["Alphabetic"] == "Test^Patient"
    for path in all_files(local.data_dir / "metadata"):
        data = path.read_bytes()
        assert b"Test^Patient" not in data
        with pytest.raises(gzip.BadGzipFile):
            gzip.decompress(data)


async def test_frames_and_bulk_data_read_through_ranges(make_archive: ArchiveFactory) -> None:
    local = await make_archive(**encrypted(), storage__encryption__segment_bytes=4096)
    data = pydicom_file("emri_small.dcm").read_bytes()  # 10 frames, 16 bits, native
    response = await local.stow([data])
    assert response.status_code in (200, 202), response.text
    ds = dcmread(io.BytesIO(data))
    path = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    frames = await local.retrieve(
        path + "/frames/2,9", accept='multipart/related; type="application/octet-stream"'
    )
    assert frames.status_code == 200, frames.text
    parts = split_multipart(frames.content, frames.headers["content-type"])
    arr = ds.pixel_array
    assert [p.data for p in parts] == [arr[1].tobytes(), arr[8].tobytes()]
    bulk = await local.retrieve(path + "/bulkdata/7FE00010", range="bytes=100-4999")
    assert bulk.status_code == 206, bulk.text
    [part] = split_multipart(bulk.content, bulk.headers["content-type"])
    assert part.data == ds.PixelData[100:5000]


async def _tamper_and_retrieve(local: LocalArchive, path: str) -> Any:
    return await local.retrieve(path, accept="multipart/related; type=application/dicom")


async def test_a_modified_file_is_an_error_never_other_bytes(make_archive: ArchiveFactory) -> None:
    local = await make_archive(**encrypted())
    instance = new_instance()
    assert (await local.stow([instance.data])).status_code == 200
    [stored] = all_files(local.blobs_root)
    raw = bytearray(stored.read_bytes())
    raw[-100] ^= 0x40
    stored.write_bytes(bytes(raw))

    response = await _tamper_and_retrieve(local, instance.path)

    assert response.status_code == 500
    assert "integrity check" in response.json()["error"]
    assert b"DICM" not in response.content
    assert str(local.data_dir) not in response.text


async def test_missing_key_is_a_clear_error(make_archive: ArchiveFactory) -> None:
    first = await make_archive(**encrypted())
    instance = new_instance()
    assert (await first.stow([instance.data])).status_code == 200
    await first.close()
    # The same data directory, configured with another key only.
    second = await make_archive(data_dir=first.data_dir, **encrypted("k2", k2=KEY_2))

    response = await _tamper_and_retrieve(second, instance.path)

    assert response.status_code == 500
    assert "key 'k1', which is not configured" in response.json()["error"]
    assert KEY_2 not in response.text and KEY_1 not in response.text


def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    require(DICOMCLOUD.exists(), f"{DICOMCLOUD} is not installed (uv sync)")
    return subprocess.run(
        [str(DICOMCLOUD), *args],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=cwd,
        env={**clean_environment(), "COLUMNS": "250", **env},
        check=False,
    )


async def test_rotate_keys_reencrypts_and_is_resumable(
    make_archive: ArchiveFactory, tmp_path: Path
) -> None:
    plain = await make_archive()  # stored before encryption was enabled
    legacy = new_instance()
    assert (await plain.stow([legacy.data])).status_code == 200
    await plain.close()
    old = await make_archive(
        data_dir=plain.data_dir, **encrypted(), storage__encryption__allow_plaintext=True
    )
    sealed = new_instance()
    assert (await old.stow([sealed.data])).status_code == 200
    assert await old.retrieve_bytes(legacy.path) == legacy.data
    await old.close()
    key_file = tmp_path / "keys.toml"
    key_file.write_text(f'k1 = "{KEY_1}"\nk2 = "{KEY_2}"\n')
    key_file.chmod(0o600)
    env = {
        "DICOMCLOUD_DATA_DIR": str(plain.data_dir),
        "DICOMCLOUD_STORAGE__ENCRYPTION__ACTIVE_KEY_ID": "k2",
        "DICOMCLOUD_STORAGE__ENCRYPTION__KEY_FILE": str(key_file),
    }

    result = run_cli("storage", "rotate-keys", cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "re-encrypted" in result.stdout
    assert KEY_1 not in result.stdout + result.stderr
    ids = {Header.parse(p.read_bytes(), "x").key_id for p in all_files(plain.data_dir / "blobs")}  # type: ignore[union-attr]
    assert ids == {"k2"}
    again = run_cli("storage", "rotate-keys", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert "re-encrypted 0 object(s)" in again.stdout
    # Only the new key left: everything still reads, byte for byte.
    new = await make_archive(data_dir=plain.data_dir, **encrypted("k2", k2=KEY_2))
    assert await new.retrieve_bytes(legacy.path) == legacy.data
    assert await new.retrieve_bytes(sealed.path) == sealed.data


async def test_rotation_leaves_a_damaged_object_alone_and_reports_it(
    make_archive: ArchiveFactory, tmp_path: Path
) -> None:
    local = await make_archive(**encrypted())
    instance = new_instance()
    assert (await local.stow([instance.data])).status_code == 200
    await local.close()
    [stored] = all_files(local.blobs_root)
    raw = bytearray(stored.read_bytes())
    raw[-1] ^= 0x01
    stored.write_bytes(bytes(raw))
    env = {
        "DICOMCLOUD_DATA_DIR": str(local.data_dir),
        "DICOMCLOUD_STORAGE__ENCRYPTION__ACTIVE_KEY_ID": "k2",
        "DICOMCLOUD_STORAGE__ENCRYPTION__KEYS": json.dumps({"k1": KEY_1, "k2": KEY_2}),
    }

    result = run_cli("storage", "rotate-keys", cwd=tmp_path, env=env)

    assert result.returncode == 1
    assert "integrity check" in result.stderr
    assert stored.read_bytes() == bytes(raw)  # untouched


def test_check_config_redacts_the_keys(tmp_path: Path) -> None:
    env = {
        "DICOMCLOUD_STORAGE__ENCRYPTION__ACTIVE_KEY_ID": "k1",
        "DICOMCLOUD_STORAGE__ENCRYPTION__KEYS": json.dumps({"k1": KEY_1}),
    }
    result = run_cli("check-config", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert KEY_1 not in result.stdout + result.stderr
    config = json.loads(result.stdout)
    assert config["storage"]["encryption"]["keys"] == {"k1": "**********"}

    bad = run_cli(
        "check-config",
        cwd=tmp_path,
        env={**env, "DICOMCLOUD_STORAGE__ENCRYPTION__KEYS": json.dumps({"k1": "c2hvcnQ="})},
    )
    assert bad.returncode == 2
    assert "32 bytes" in bad.stderr and "c2hvcnQ=" not in bad.stderr
