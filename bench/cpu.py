"""Server CPU time per instance: a steadier measure than wall-clock on a shared machine.

``python -m bench.cpu [--quick] [--peers dicomcloud,orthanc] [--scenarios GLOB,...]
[--dicomcloud-args "..."]`` starts each peer fresh per scenario (like ``python -m bench``),
runs the scenario, and prints the CPU the server's process tree used (user + system,
from /proc/PID/stat, all threads, children included) divided by the instances stored,
next to the wall-clock rate.  Used to check each ingest optimisation
(docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import os
import shlex
import time

from bench.cstore import run_cstore
from bench.dataset import ensure
from bench.peers import DicomcloudPeer, OrthancPeer, Peer, process_tree
from bench.stow import run_stow

_TICKS = os.sysconf("SC_CLK_TCK")

SCENARIOS = {
    f"{kind}-{set_name}": (kind, set_name)
    for set_name in ("small", "large")
    for kind in ("stow-1x1", "stow-1x4", "stow-50x1", "stow-50x4", "cstore-1", "cstore-4")
}


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live descendants (threads included)."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def run(peer: Peer, kind: str, files: list[str]) -> tuple[float, float, int]:
    """(server CPU seconds, wall seconds, instances) of one scenario run."""
    from pathlib import Path

    paths = [Path(f) for f in files]
    cpu0 = tree_cpu_seconds(peer.pid)
    if kind.startswith("cstore"):
        assocs = int(kind.split("-")[1])
        res = run_cstore(peer.dicom_port, peer.aet, paths, assocs)
        seconds, ok = res.seconds, not res.failures and not any(res.exit_codes)
    else:
        per, clients = (int(x) for x in kind.split("-")[1].split("x"))
        stow = run_stow(peer.http_port, peer.stow_path, paths, per, clients)
        seconds, ok = stow.seconds, not stow.instances_failed and not stow.failed_requests
    time.sleep(0.3)  # let deferred work (outbox relay) run: it is part of the cost
    cpu = tree_cpu_seconds(peer.pid) - cpu0
    if not ok:
        raise SystemExit(f"{peer.name} {kind}: failures")
    return cpu, seconds, len(files)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--peers", default="dicomcloud")
    parser.add_argument("--scenarios", default="*")
    parser.add_argument("--dicomcloud-args", default="")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N files")
    args = parser.parse_args()
    dataset = ensure(quick=args.quick)
    patterns = args.scenarios.split(",")
    keys = [k for k in SCENARIOS if any(fnmatch.fnmatch(k, p) for p in patterns)]
    peers: dict[str, type[Peer]] = {"dicomcloud": DicomcloudPeer, "orthanc": OrthancPeer}
    print(f"{'scenario':18} {'peer':10} {'CPU ms/inst':>11} {'inst/s':>8} {'CPU %':>6}")
    for key in keys:
        kind, set_name = SCENARIOS[key]
        files = [str(p) for p in dataset.files(set_name)][: args.limit or None]
        for name in args.peers.split(","):
            extra = shlex.split(args.dicomcloud_args) if name == "dicomcloud" else []
            for _ in range(args.repeat):
                with peers[name](extra_args=extra) as peer:
                    cpu, seconds, n = run(peer, kind, files)
                print(
                    f"{key:18} {name:10} {cpu * 1000 / n:11.2f} {n / seconds:8.1f} "
                    f"{100 * cpu / seconds:6.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
