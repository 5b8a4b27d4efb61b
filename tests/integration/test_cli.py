"""The ``dicomcloud`` command as a user runs it: import, migrate, check-config."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

import backends
from conftest import DICOMCLOUD, clean_environment, require
from dicomcloud import cli
from dicomcloud.index.engine import async_url
from integration.support import new_instance, pydicom_file

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env of the repository is read


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    require(DICOMCLOUD.exists(), f"{DICOMCLOUD} is not installed (uv sync)")
    return subprocess.run(
        [str(DICOMCLOUD), *args],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=cwd,  # no stray .env from the repository
        env={**clean_environment(), "COLUMNS": "250", **(env or {})},
        check=False,
    )


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def check_config(*args: str, env: dict[str, str] | None = None) -> Outcome:
    """``dicomcloud check-config`` in process (Click's runner): no logging is set up by
    this command, so it is safe here, and much faster than a new interpreter."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("DICOMCLOUD_")}
    result = CliRunner().invoke(cli.app, ["check-config", *args], env={**unset, **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr)


def count(output: str, label: str) -> int:
    """A number from the import summary table (``│ stored │ 5 │``)."""
    found = re.search(rf"[│|]\s*{label}\s*[│|]\s*(\d+)\s*[│|]", output)
    assert found, f"no {label!r} row in:\n{output}"
    return int(found.group(1))


def blobs(data_dir: Path) -> dict[str, bytes]:
    root = data_dir / "blobs"
    return {p.name: p.read_bytes() for p in root.rglob("*.dcm")}


def indexed(data_dir: Path) -> set[str]:
    with sqlite3.connect(data_dir / "index.sqlite3") as conn:
        return {row[0] for row in conn.execute("SELECT sop_instance_uid FROM instance")}


def test_import_a_folder_then_again(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    (folder / "nested" / "deeper").mkdir(parents=True)
    instances = [new_instance() for _ in range(3)]
    (folder / "a.dcm").write_bytes(instances[0].data)
    (folder / "nested" / "b").write_bytes(instances[1].data)  # no extension
    (folder / "nested" / "deeper" / "c.dcm").write_bytes(instances[2].data)
    shutil.copyfile(pydicom_file("CT_small.dcm"), folder / "nested" / "ct.dcm")
    (folder / "notes.txt").write_text("a text file, not DICOM\n")
    shutil.copyfile(pydicom_file("MR_truncated.dcm"), folder / "nested" / "truncated.dcm")
    data_dir = tmp_path / "data"

    first = run("import", "--data-dir", str(data_dir), str(folder), cwd=tmp_path)

    # The truncated DICOM file could not be imported: exit 1; the text file is only
    # reported as not DICOM.
    assert first.returncode == 1, first.stderr
    assert count(first.stdout, "stored") == 4
    assert count(first.stdout, "duplicate") == 0
    assert count(first.stdout, "not DICOM") == 1
    assert count(first.stdout, "failed") == 1
    assert "notes.txt" in first.stdout
    assert "truncated.dcm" in first.stdout and "truncated" in first.stdout
    stored = blobs(data_dir)
    for instance in instances:
        assert stored[f"{instance.sop}.dcm"] == instance.data  # the file, byte for byte
    ct_sop = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    assert stored[f"{ct_sop}.dcm"] == pydicom_file("CT_small.dcm").read_bytes()
    assert indexed(data_dir) == {i.sop for i in instances} | {ct_sop}

    # Migrating an index that is up to date (import migrated it) changes nothing.
    migrated = run("migrate", "--data-dir", str(data_dir), cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "up to date" in migrated.stdout
    assert indexed(data_dir) == {i.sop for i in instances} | {ct_sop}

    second = run("import", "--data-dir", str(data_dir), str(folder), cwd=tmp_path)

    assert count(second.stdout, "stored") == 0
    assert count(second.stdout, "duplicate") == 4
    assert count(second.stdout, "not DICOM") == 1
    assert count(second.stdout, "failed") == 1
    assert second.returncode == 1  # the same verdict as the first run
    assert blobs(data_dir) == stored


def test_import_of_a_missing_path_exits_2(tmp_path: Path) -> None:
    result = run("import", "--data-dir", str(tmp_path / "d"), str(tmp_path / "nope"), cwd=tmp_path)

    assert result.returncode == 2
    assert "nope" in result.stderr


@pytest.mark.backend
def test_migrate_twice_on_postgresql(tmp_path: Path) -> None:
    async def main() -> None:
        async with backends.database_url("postgresql", tmp_path) as url:
            for _ in range(2):
                result = await asyncio.to_thread(
                    run, "migrate", cwd=tmp_path, env={"DICOMCLOUD_INDEX__URL": url}
                )
                assert result.returncode == 0, result.stderr
                assert "up to date" in result.stdout
            engine = create_async_engine(async_url(url), poolclass=NullPool)
            try:
                async with engine.connect() as conn:
                    tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
            finally:
                await engine.dispose()
            assert {"patient", "study", "series", "instance", "outbox"} <= tables

    asyncio.run(main())


def test_check_config_redacts_the_password(tmp_path: Path) -> None:
    url = "postgresql://archive:s3cr3t-pw@db.example:5432/dicom"

    result = check_config(env={"DICOMCLOUD_INDEX__URL": url})

    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["index"]["url"] == "postgresql://archive:***@db.example:5432/dicom"
    assert "s3cr3t-pw" not in result.stdout + result.stderr
    assert config["server"]["http_port"] == 8080


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"DICOMCLOUD_SERVER__HTTP_PORT": "99999"}, "server.http_port"),
        ({"DICOMCLOUD_SERVER__AE_TITLE": "WAY_TOO_LONG_AE_TITLE"}, "server.ae_title"),
        ({"DICOMCLOUD_INGEST__DUPLICATE_POLICY": "sometimes"}, "ingest.duplicate_policy"),
    ],
)
def test_invalid_environment_value_exits_2_naming_the_key(
    tmp_path: Path, env: dict[str, str], key: str
) -> None:
    result = check_config(env=env)

    assert result.returncode == 2
    assert key in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_bad_toml_key_exits_2_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "dicomcloud.toml"
    config.write_text("[server]\nhttp_prot = 8042\n")

    result = check_config("--config", str(config))

    assert result.returncode == 2
    assert "http_prot" in result.stderr, result.stderr


def test_malformed_toml_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "dicomcloud.toml"
    config.write_text("[server\nhttp_port = \n")

    result = check_config("--config", str(config))

    assert result.returncode == 2
    assert "configuration" in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = check_config("--config", str(tmp_path / "absent.toml"))

    assert result.returncode == 2
    assert "absent.toml" in result.stderr


def test_config_file_values_are_used_and_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "dicomcloud.toml"
    config.write_text(
        "data_dir = 'from-toml'\n"
        "[server]\nhttp_port = 8123\ndicom_port = 11999\nae_title = 'TOMLAE'\n"
        "[ingest]\nduplicate_policy = 'replace'\n"
    )

    from_file = check_config("--config", str(config))
    overridden = check_config("--config", str(config), env={"DICOMCLOUD_SERVER__HTTP_PORT": "8124"})

    assert from_file.returncode == 0, from_file.stderr
    values = json.loads(from_file.stdout)
    assert values["server"]["http_port"] == 8123
    assert values["server"]["dicom_port"] == 11999
    assert values["server"]["ae_title"] == "TOMLAE"
    assert values["ingest"]["duplicate_policy"] == "replace"
    assert values["data_dir"] == "from-toml"
    assert overridden.returncode == 0, overridden.stderr
    merged = json.loads(overridden.stdout)
    assert merged["server"]["http_port"] == 8124
    assert merged["server"]["ae_title"] == "TOMLAE"  # the rest of the section stays
