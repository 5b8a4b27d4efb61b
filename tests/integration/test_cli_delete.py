"""``dicomcloud delete`` as an operator runs it: files imported with ``dicomcloud
import``, then a series deleted after answering the confirmation prompt, an instance
with ``--yes``; "no" deletes nothing; invalid UIDs and ``[retention] allow_delete =
false`` are refused."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from pydicom.uid import generate_uid

from conftest import clean_environment
from dicomcloud.domain.access import AccessQuery, AccessRecord
from dicomcloud.index.access_log import SqlAccessLog
from dicomcloud.index.sql_index import SqlIndex
from integration.support import new_dataset, part10, stored_files
from integration.test_cli import DICOMCLOUD, run


def _dicomcloud(
    *args: str, cwd: Path, answer: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DICOMCLOUD), *args],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=cwd,
        input=answer,
        env={**clean_environment(), "COLUMNS": "250", **(env or {})},
        check=False,
    )


async def _delete_records(data_dir: Path) -> list[AccessRecord]:
    index = SqlIndex.from_url(f"sqlite:///{data_dir / 'index.sqlite3'}")
    try:
        found = await SqlAccessLog(index.runner).search(AccessQuery(newest_first=False))
        return [r for r in found if r.action == "delete"]
    finally:
        await index.close()


async def _sops(data_dir: Path, study: str) -> list[str]:
    index = SqlIndex.from_url(f"sqlite:///{data_dir / 'index.sqlite3'}")
    try:
        return [r.sop_instance_uid for r in await index.list_instances("default", study)]
    finally:
        await index.close()


def test_delete_with_and_without_confirmation(tmp_path: Path) -> None:
    study, first, second = generate_uid(), generate_uid(), generate_uid()
    files = tmp_path / "in"
    files.mkdir()
    sops = {}
    for n, series in enumerate((first, first, second)):
        ds = new_dataset(study=study, series=series)
        ds.InstanceNumber = n + 1
        sops[n] = str(ds.SOPInstanceUID)
        (files / f"{n}.dcm").write_bytes(part10(ds))
    data = tmp_path / "data"
    imported = run("import", str(files), "--data-dir", str(data), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert len(stored_files(data / "blobs")) == 3

    kept = _dicomcloud(
        "delete", "--study", study, "--series", second, "--data-dir", str(data),
        cwd=tmp_path, answer="n\n",
    )  # fmt: skip
    assert kept.returncode == 1
    assert "1 instance(s) in 1 series" in kept.stdout
    assert len(asyncio.run(_sops(data, study))) == 3

    gone = _dicomcloud(
        "delete", "--study", study, "--series", second, "--data-dir", str(data),
        cwd=tmp_path, answer="y\n",
    )  # fmt: skip
    assert gone.returncode == 0, gone.stderr
    assert "instances" in gone.stdout
    assert sorted(asyncio.run(_sops(data, study))) == sorted([sops[0], sops[1]])
    assert len(stored_files(data / "blobs")) == 2
    (record,) = asyncio.run(_delete_records(data))
    assert (record.protocol, record.study_uids, record.series_uids) == ("CLI", (study,), (second,))
    assert record.sop_instance_uids == (sops[2],) and record.instances == 1

    one = _dicomcloud(
        "delete", "--study", study, "--series", first, "--instance", sops[0], "--yes",
        "--data-dir", str(data), cwd=tmp_path,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert asyncio.run(_sops(data, study)) == [sops[1]]
    assert {p.name for p in stored_files(data / "blobs")} == {f"{sops[1]}.dcm"}

    again = _dicomcloud(
        "delete", "--study", study, "--series", first, "--instance", sops[0], "--yes",
        "--data-dir", str(data), cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 1 and "not found" in again.stderr

    invalid = _dicomcloud(
        "delete", "--study", "1.2.x", "--yes", "--data-dir", str(data), cwd=tmp_path
    )
    assert invalid.returncode == 2 and "not a valid UID" in invalid.stderr

    refused = _dicomcloud(
        "delete", "--study", study, "--yes", "--data-dir", str(data), cwd=tmp_path,
        env={"DICOMCLOUD_RETENTION__ALLOW_DELETE": "false"},
    )  # fmt: skip
    assert refused.returncode == 1 and "allow_delete" in refused.stderr
    assert asyncio.run(_sops(data, study)) == [sops[1]]
