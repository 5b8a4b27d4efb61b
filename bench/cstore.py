"""C-STORE with dcmtk's storescu: N concurrent associations over N slices of the files.

Files are sent as stored (explicit VR little endian); storescu proposes its default
uncompressed presentation contexts. ``-nh`` keeps going after a failed store so that
failures are counted (from storescu's warnings) instead of hiding the rest of the run.
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.peers import HOST, bench_env

STORESCU = Path("/usr/bin/storescu") if Path("/usr/bin/storescu").exists() else None
CALLING_AET = "BENCHSCU"
_FAILED = re.compile(r"Store (SCU )?Failed|Store Failed|failed|Error", re.IGNORECASE)


def storescu_path() -> Path | None:
    """dcmtk's storescu (not pynetdicom's script of the same name in the venv)."""
    if STORESCU is not None:
        return STORESCU
    found = shutil.which("storescu", path="/usr/bin:/bin:/usr/local/bin")
    return Path(found) if found else None


@dataclass
class CStoreRun:
    seconds: float
    associations: int
    exit_codes: list[int]
    failures: int  # storescu warning/error lines about failed stores
    client_cpu_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def run_cstore(
    port: int,
    called_aet: str,
    files: Sequence[Path],
    associations: int,
    timeout: float = 900.0,
) -> CStoreRun:
    """Run ``associations`` storescu processes concurrently, each over a contiguous slice."""
    exe = storescu_path()
    if exe is None:
        raise RuntimeError("dcmtk storescu not found")
    n = len(files)
    slices = [
        files[i * n // associations : (i + 1) * n // associations] for i in range(associations)
    ]
    env = bench_env()
    with tempfile.TemporaryDirectory(prefix="storescu-") as tmp:
        cmds: list[list[str]] = []
        logs: list[Path] = []
        for i, part in enumerate(slices):
            # the file list goes on the command line (well under ARG_MAX for ~3000 paths)
            cmds.append(
                [
                    str(exe),
                    "-nh",
                    "-aet",
                    CALLING_AET,
                    "-aec",
                    called_aet,
                    "-to",
                    "30",
                    "-ta",
                    "30",
                    "-td",
                    "300",
                    HOST,
                    str(port),
                    *(str(f) for f in part),
                ]
            )
            logs.append(Path(tmp) / f"storescu-{i}.log")
        handles = [open(p, "wb") for p in logs]  # noqa: SIM115 - closed below
        try:
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.monotonic()
            procs = [
                subprocess.Popen(
                    c, stdout=h, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
                for c, h in zip(cmds, handles, strict=True)
            ]
            codes: list[int] = []
            deadline = t0 + timeout
            for p in procs:
                try:
                    codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    p.kill()
                    codes.append(p.wait(timeout=30))
            seconds = time.monotonic() - t0
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        finally:
            for h in handles:
                h.close()
        failures = 0
        errors: list[str] = []
        for log in logs:
            for line in log.read_text(errors="replace").splitlines():
                if _FAILED.search(line):
                    failures += 1
                    if len(errors) < 8:
                        errors.append(line.strip()[:300])
    return CStoreRun(
        seconds=seconds,
        associations=associations,
        exit_codes=codes,
        failures=failures,
        client_cpu_seconds=cpu,
        errors=errors,
    )
