"""``dicomcloud serve`` records every request and association, writes what is queued
when it stops, and ``dicomcloud audit`` shows it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE
from typer.testing import CliRunner

from conftest import running_server
from dicomcloud import cli
from integration.support import VERIFICATION_SOP_CLASS, multipart_related, new_instance

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def audit(*args: str) -> Outcome:
    """``dicomcloud audit`` in process (Click's runner; a new interpreter costs ~5 s of
    CPU): the command sets up no logging."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("DICOMCLOUD_")}
    result = CliRunner().invoke(cli.app, ["audit", *args], env={**unset, "COLUMNS": "250"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr)


def test_serve_records_requests_and_audit_prints_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env of the repository is read
    data_dir = tmp_path / "data"
    instance = new_instance()
    body, content_type = multipart_related([instance.data])
    with running_server(data_dir) as server:
        stored = httpx.post(
            f"{server.dicomweb_url}/studies",
            content=body,
            headers={
                "Content-Type": content_type,
                "Authorization": "Bearer NEVER-STORED-TOKEN",
                "User-Agent": "audit-test",
            },
            timeout=60,
        )
        assert stored.status_code == 200, stored.text
        found = httpx.get(f"{server.dicomweb_url}/studies?PatientID=NOBODY", timeout=60)
        assert found.status_code == 200
        ae = AE(ae_title="ECHOSCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(VERIFICATION_SOP_CLASS)
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="DICOMCLOUD")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
    # stopped: everything queued was written on the way out

    table = audit("--data-dir", str(data_dir), "--since", "1h")
    lines = audit("--data-dir", str(data_dir), "--json", "--limit", "10")
    only_echo = audit("--data-dir", str(data_dir), "--action", "C-ECHO", "--json")
    nothing = audit("--data-dir", str(data_dir), "--tenant", "other")
    bad = audit("--data-dir", str(data_dir), "--since", "last tuesday")

    assert table.returncode == 0, table.stderr
    for text in ("STOW-RS store", "QIDO-RS search", "C-ECHO", "association", "ECHOSCU"):
        assert text in table.stdout, table.stdout
    assert instance.study in table.stdout
    records = [json.loads(line) for line in lines.stdout.splitlines()]  # JSON lines
    actions = sorted(r["action"] for r in records)
    assert actions == ["C-ECHO", "QIDO-RS search", "STOW-RS store", "association"], actions
    stow = next(r for r in records if r["action"] == "STOW-RS store")
    assert stow["sop_instance_uids"] == [instance.sop]
    assert stow["user_agent"] == "audit-test" and stow["bytes_in"] == len(body)
    assert "NEVER-STORED-TOKEN" not in lines.stdout
    assert b"NEVER-STORED-TOKEN" not in b"".join(
        p.read_bytes() for p in data_dir.glob("index.sqlite3*")
    )
    assert only_echo.returncode == 0 and '"C-ECHO"' in only_echo.stdout
    assert '"association"' not in only_echo.stdout
    assert nothing.returncode == 0 and "0 record(s)" in nothing.stdout
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr
