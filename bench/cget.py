"""C-GET and C-MOVE throughput (PS3.4 C.4.3, C.4.2) with dcmtk's getscu and movescu.

Each peer is first loaded with the set over C-STORE (4 storescu associations, not
timed).  Then every study is retrieved in turn, one association per study:

* ``cget``: ``getscu`` at the STUDY level, receiving without writing (``--ignore``);
* ``cmove``: ``movescu`` at the STUDY level to a dcmtk ``storescp`` started here
  (``--ignore``), registered as Move Destination ``BENCHSCP`` in both peers.

Instances per second count the completed sub-operations the tools report in the final
responses, over the wall time of all retrievals.  dcmtk and the peers run with
TCP_NODELAY=1 (``bench_env``).
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from bench.peers import HOST, DicomcloudPeer, OrthancPeer, Peer, bench_env, free_port

GETSCU = Path("/usr/bin/getscu")
MOVESCU = Path("/usr/bin/movescu")
STORESCP = Path("/usr/bin/storescp")
CALLING_AET = "BENCHSCU"
DESTINATION_AET = "BENCHSCP"
#: getscu -v prints "Number of Completed Suboperations : N" at the end; movescu -d
#: dumps every response ("Completed Suboperations       : N"): the last one counts.
_COMPLETED = re.compile(r"Completed Suboperations\s*:\s*(\d+)")
_FAILED = re.compile(r"Failed Suboperations\s*:\s*(\d+)")


def tools_available() -> tuple[bool, str]:
    missing = [str(p) for p in (GETSCU, MOVESCU, STORESCP) if not p.exists()]
    return (not missing, f"missing {', '.join(missing)}" if missing else "")


class _Destination:
    """The port of the storescp every peer of this process moves to."""

    port: ClassVar[int] = 0

    @classmethod
    def ensure_port(cls) -> int:
        if not cls.port:
            cls.port = free_port()
        return cls.port


class OrthancRetrievePeer(OrthancPeer):
    """Orthanc allowing C-GET / C-MOVE from any AE, with BENCHSCP as a modality."""

    def _prepare(self) -> None:
        super()._prepare()
        assert self.workdir is not None
        path = self.workdir / "orthanc.json"
        config = json.loads(path.read_text())
        config["DicomAlwaysAllowGet"] = True
        config["DicomAlwaysAllowMove"] = True
        config["DicomModalities"] = {
            DESTINATION_AET: [DESTINATION_AET, HOST, _Destination.ensure_port()],
            # Orthanc wants a port; it never connects to the C-GET SCU.
            CALLING_AET: [CALLING_AET, HOST, 104],
        }
        path.write_text(json.dumps(config, indent=2))


class DicomcloudRetrievePeer(DicomcloudPeer):
    """dicomcloud with BENCHSCP in ``[dimse.destinations]``."""

    def _prepare(self) -> None:
        super()._prepare()
        assert self.workdir is not None
        (self.workdir / "dicomcloud.toml").write_text(
            f'[dimse.destinations]\n{DESTINATION_AET} = "{HOST}:{_Destination.ensure_port()}"\n'
        )

    def _command(self) -> list[str]:
        assert self.workdir is not None
        return [*super()._command(), "--config", str(self.workdir / "dicomcloud.toml")]


RETRIEVE_PEERS: dict[str, type[Peer]] = {
    OrthancPeer.name: OrthancRetrievePeer,
    DicomcloudPeer.name: DicomcloudRetrievePeer,
}


@dataclass
class RetrieveRun:
    seconds: float
    requests: int
    completed: int
    failed: int
    exit_codes: list[int]
    client_cpu_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


@contextlib.contextmanager
def storescp() -> Iterator[None]:
    """dcmtk's storescp as the Move Destination, receiving without writing."""
    port = _Destination.ensure_port()
    process = subprocess.Popen(
        [str(STORESCP), "-aet", DESTINATION_AET, "--ignore", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=bench_env(),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"storescp did not start on port {port}")
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=20)


def _command(kind: str, port: int, called_aet: str, study_uid: str) -> list[str]:
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]
    common = ["-S", "-aet", CALLING_AET, "-aec", called_aet, "-to", "30", "-td", "300"]
    if kind == "cget":
        return [str(GETSCU), "-v", *common, "--ignore", *keys, HOST, str(port)]
    return [str(MOVESCU), "-d", *common, "-aem", DESTINATION_AET, *keys, HOST, str(port)]


def run_retrieve(kind: str, port: int, called_aet: str, study_uids: Sequence[str]) -> RetrieveRun:
    """Retrieve every study in turn (``kind`` is ``cget`` or ``cmove``)."""
    completed = failed = 0
    codes: list[int] = []
    errors: list[str] = []
    env = bench_env()
    with storescp() if kind == "cmove" else contextlib.nullcontext():
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        for uid in study_uids:
            result = subprocess.run(
                _command(kind, port, called_aet, uid),
                capture_output=True,
                text=True,
                timeout=900,
                env=env,
                check=False,
            )
            codes.append(result.returncode)
            output = result.stdout + result.stderr
            done = [int(n) for n in _COMPLETED.findall(output)]
            bad = [int(n) for n in _FAILED.findall(output)]
            completed += done[-1] if done else 0
            failed += bad[-1] if bad else 0
            if result.returncode != 0 or not done:
                errors.append(f"{uid}: exit {result.returncode}: {output[-300:]!r}")
        seconds = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return RetrieveRun(seconds, len(study_uids), completed, failed, codes, cpu, errors[:8])
