"""Bug (fixed in src/dicomcloud/server.py): on SIGTERM - what ``docker stop``, systemd
and Kubernetes send - ``dicomcloud serve`` died before stopping the DIMSE server and
the archive.  uvicorn (0.29+) handles the signal, shuts HTTP down, then re-raises
SIGTERM with the default handler (``Server.capture_signals``), which killed the process
before the ``finally`` of ``server.run`` (``dimse.stop()``, ``archive.stop()``) ran:
in-flight C-STORE associations cut, the group committer and the outbox relay not
drained, the index not closed, and the process dead by the signal (status -15, 143 in a
shell) instead of returning from ``serve``.

SIGINT (Ctrl-C) was fine: it comes back as KeyboardInterrupt, the ``finally`` runs and
the command exits 0.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from conftest import start_server

pytestmark = pytest.mark.timeout(120)


def test_sigterm_stops_the_archive_cleanly(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        server.process.send_signal(signal.SIGTERM)
        returncode = server.process.wait(timeout=30)
    finally:
        server.stop()

    assert returncode == 0, server.log()[-2000:]  # -15: killed before the cleanup


def test_sigint_stops_the_archive_cleanly(tmp_path: Path) -> None:
    """The same check passes for SIGINT (so it can tell the two apart)."""
    server = start_server(tmp_path / "data")
    try:
        server.process.send_signal(signal.SIGINT)
        returncode = server.process.wait(timeout=30)
    finally:
        server.stop()

    assert returncode == 0, server.log()[-2000:]
