"""The two servers under test, each started on loopback free ports with fresh storage."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from bench import OUT_DIR, REPO_ROOT

HOST = "127.0.0.1"
VENV_BIN = REPO_ROOT / ".venv" / "bin"
DICOMCLOUD_BIN = VENV_BIN / "dicomcloud"
ORTHANC_BIN = Path(shutil.which("Orthanc") or "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN_CANDIDATES = (
    Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
    Path("/usr/lib/orthanc/libOrthancDicomWeb.so.1.7"),
)
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def bench_env() -> dict[str, str]:
    """Environment for servers and dcmtk clients: Nagle off (dcmtk reads TCP_NODELAY)."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "*/*"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may contain spaces or parentheses: split after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 10_000:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def status_kb(pid: int, field: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM, ...) from /proc/PID/status, 0 if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return 0
    return 0


class PeerError(RuntimeError):
    pass


class Peer(ABC):
    """A server process under test: start on free ports with empty storage, stop, inspect."""

    name: ClassVar[str]
    aet: ClassVar[str]

    def __init__(self, work_root: Path | None = None, extra_args: Sequence[str] = ()) -> None:
        self.work_root = work_root or (OUT_DIR / "tmp")
        self.extra_args = list(extra_args)
        self.workdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_port = 0
        self.dicom_port = 0
        self.log_path: Path | None = None
        self.startup_seconds = 0.0
        self._log_file: Any = None

    # -- to implement -------------------------------------------------------------
    @classmethod
    @abstractmethod
    def available(cls) -> tuple[bool, str]:
        """Whether the peer can be started here (and why not)."""

    @classmethod
    @abstractmethod
    def version(cls) -> str: ...

    @abstractmethod
    def _command(self) -> list[str]: ...

    @abstractmethod
    def _ready(self) -> bool: ...

    @abstractmethod
    def count_instances(self) -> int | None:
        """How many instances the peer holds now (None if it cannot tell)."""

    stow_path: ClassVar[str] = "/dicom-web/studies"

    # -- lifecycle ------------------------------------------------------------------
    @property
    def pid(self) -> int:
        if self.proc is None:
            raise PeerError(f"{self.name} is not running")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _prepare(self) -> None:
        """Write configuration files into ``self.workdir`` (optional)."""
        assert self.workdir is not None

    def start(self) -> None:
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.work_root))
        self.http_port = free_port()
        self.dicom_port = free_port()
        while self.dicom_port == self.http_port:
            self.dicom_port = free_port()
        self._prepare()
        self.log_path = self.workdir / "server.log"
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self._command(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=bench_env(),
            cwd=self.workdir,
        )
        t0 = time.monotonic()
        deadline = t0 + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.alive():
                raise PeerError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self._ready() and self._dicom_listening():
                    self.startup_seconds = time.monotonic() - t0
                    return
            time.sleep(0.1)
        self.stop()
        raise PeerError(f"{self.name} not ready after {START_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def _dicom_listening(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            return s.connect_ex((HOST, self.dicom_port)) == 0

    def stop(self, keep: bool = False) -> None:
        """Terminate the process tree (by pid), then remove the storage unless ``keep``."""
        if self.proc is not None:
            tree = process_tree(self.proc.pid) if self.alive() else []
            if self.alive():
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=STOP_TIMEOUT)
            for pid in tree[1:]:  # leftover children we started indirectly
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.workdir is not None and not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def log_tail(self, lines: int = 25) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def log_errors(self, limit: int = 10) -> list[str]:
        """Log lines that look like errors (for the report)."""
        if self.log_path is None or not self.log_path.exists():
            return []
        out: list[str] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            low = line.lower()
            if any(k in low for k in ("error", "traceback", "exception", "critical")):
                out.append(line.strip()[:300])
                if len(out) >= limit:
                    break
        return out

    def __enter__(self) -> Peer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class OrthancPeer(Peer):
    name = "orthanc"
    aet = "ORTHANC"

    @staticmethod
    def plugin_path() -> Path | None:
        for p in DICOMWEB_PLUGIN_CANDIDATES:
            if p.exists():
                return p
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, timeout=10
            ).stdout
            for line in out.splitlines():
                if "libOrthancDicomWeb.so" in line and Path(line).is_file():
                    return Path(line)
        return None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if not ORTHANC_BIN.exists():
            return False, f"{ORTHANC_BIN} not found"
        if cls.plugin_path() is None:
            return False, "Orthanc DICOMweb plugin not found"
        return True, ""

    @classmethod
    def version(cls) -> str:
        try:
            out = subprocess.run(
                [str(ORTHANC_BIN), "--version"], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return "unknown"
        first = out.splitlines()[0] if out else "Orthanc unknown"
        first = "Orthanc " + first.split()[-1]
        return f"{first} + DICOMweb plugin {_dpkg_version('orthanc-dicomweb')}"

    def _prepare(self) -> None:
        assert self.workdir is not None
        plugin = self.plugin_path()
        config = {
            "Name": "bench-orthanc",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [str(plugin)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (self.workdir / "orthanc.json").write_text(json.dumps(config, indent=2))

    def _command(self) -> list[str]:
        assert self.workdir is not None
        config = str(self.workdir / "orthanc.json")
        return [str(ORTHANC_BIN), "--no-jobs", *self.extra_args, config]

    def _ready(self) -> bool:
        status, _ = http_get(self.http_port, "/system", timeout=2.0)
        return status == 200

    def count_instances(self) -> int | None:
        status, body = http_get(self.http_port, "/statistics", timeout=60.0)
        if status != 200:
            return None
        return int(json.loads(body)["CountInstances"])


class DicomcloudPeer(Peer):
    name = "dicomcloud"
    aet = "DICOMCLOUD"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if not DICOMCLOUD_BIN.exists():
            return False, f"{DICOMCLOUD_BIN} not found (run `uv sync`)"
        try:
            res = subprocess.run(
                [str(DICOMCLOUD_BIN), "serve", "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO_ROOT,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return False, f"`dicomcloud serve --help` failed: {exc}"
        if res.returncode != 0:
            last = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["?"]
            return False, f"`dicomcloud serve --help` exit {res.returncode}: {last[0]}"
        return True, ""

    @classmethod
    def version(cls) -> str:
        try:
            rev = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                cwd=REPO_ROOT,
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--", "src"],
                capture_output=True,
                text=True,
                timeout=10,
                cwd=REPO_ROOT,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "unknown"
        return f"dicomcloud git {rev}{' (src modified)' if dirty else ''}"

    def _command(self) -> list[str]:
        assert self.workdir is not None
        return [
            str(DICOMCLOUD_BIN),
            "serve",
            "--data-dir",
            str(self.workdir / "data"),
            "--http-port",
            str(self.http_port),
            "--dicom-port",
            str(self.dicom_port),
            "--ae-title",
            self.aet,
            *self.extra_args,
        ]

    def _ready(self) -> bool:
        status, _ = http_get(self.http_port, "/readyz", timeout=2.0)
        return status == 200

    def count_instances(self) -> int | None:
        """Count stored ``.dcm`` blobs; fall back to QIDO study counts if none found."""
        assert self.workdir is not None
        data = self.workdir / "data"
        n = sum(1 for _ in data.rglob("*.dcm")) if data.exists() else 0
        if n:
            return n
        return self._qido_count()

    def _qido_count(self) -> int | None:
        total = 0
        offset = 0
        for _ in range(1000):  # bounded paging
            status, body = http_get(
                self.http_port,
                f"/dicom-web/studies?includefield=00201208&limit=100&offset={offset}",
                timeout=60.0,
            )
            if status == 204:
                return total
            if status != 200:
                return None
            rows = json.loads(body)
            if not rows:
                return total
            for row in rows:
                total += int(row.get("00201208", {}).get("Value", [0])[0])
            offset += len(rows)
            if len(rows) < 100:
                return total
        return total


def _dpkg_version(package: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if out:
            return out
    return "unknown"


def dcmtk_version() -> str:
    return f"dcmtk {_dpkg_version('dcmtk')}"


PEERS: dict[str, type[Peer]] = {"orthanc": OrthancPeer, "dicomcloud": DicomcloudPeer}
