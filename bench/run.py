"""Scenario matrix and orchestration: every scenario against every peer, fresh each time."""

from __future__ import annotations

import argparse
import fnmatch
import json
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import BENCH_DIR, OUT_DIR, REPO_ROOT, dataset
from bench.cget import RETRIEVE_PEERS, run_retrieve, tools_available
from bench.cstore import run_cstore, storescu_path
from bench.memory import run_memory, shapes
from bench.peers import PEERS, Peer, PeerError
from bench.stow import run_stow

MEMORY_TARGET_MB = 300.0


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    kind: str  # "stow" | "cstore" | "memory" | "cget" | "cmove"
    set_name: str = ""
    per_request: int = 1
    clients: int = 1
    memory_shape: str = ""

    @property
    def target(self) -> str:
        if self.kind == "stow":
            return ">= 2x Orthanc inst/s"
        if self.kind in ("cstore", *RETRIEVE_KINDS):
            return ">= 1x Orthanc inst/s"
        if self.kind in SEARCH_TARGETS:
            return SEARCH_TARGETS[self.kind]
        return f"dicomcloud peak RSS < {MEMORY_TARGET_MB:.0f} MB"


SET_LABEL = {"small": "64x64", "large": "512x512"}
RETRIEVE_KINDS = ("cget", "cmove")
RETRIEVE_TITLE = {"cget": "C-GET", "cmove": "C-MOVE"}
#: the search scenarios (bench/search.py): latency targets on the small set, loaded
SEARCH_TARGETS = {
    "qido": "dicomcloud p50 <= 0.5x Orthanc's",
    "cfind": "dicomcloud p50 <= 1x Orthanc's",
}


def all_scenarios() -> list[Scenario]:
    out: list[Scenario] = []
    for set_name in ("small", "large"):
        label = SET_LABEL[set_name]
        for per in (1, 50):
            for clients in (1, 4):
                out.append(
                    Scenario(
                        key=f"stow-{per}x{clients}-{set_name}",
                        title=f"STOW-RS {per}/req, {clients} client{'s' * (clients > 1)}, {label}",
                        kind="stow",
                        set_name=set_name,
                        per_request=per,
                        clients=clients,
                    )
                )
        for assoc in (1, 4):
            out.append(
                Scenario(
                    key=f"cstore-{assoc}-{set_name}",
                    title=f"C-STORE {assoc} assoc{'s' * (assoc > 1)}, {label}",
                    kind="cstore",
                    set_name=set_name,
                    clients=assoc,
                )
            )
    for kind in RETRIEVE_KINDS:
        for set_name in ("small", "large"):
            out.append(
                Scenario(
                    key=f"{kind}-1-{set_name}",
                    title=f"{RETRIEVE_TITLE[kind]} by study, 1 assoc, {SET_LABEL[set_name]}",
                    kind=kind,
                    set_name=set_name,
                )
            )
    for shape in ("instances", "multiframe"):
        out.append(
            Scenario(
                key=f"memory-{shape}",
                title=f"Memory: one STOW of {shape}",
                kind="memory",
                memory_shape=shape,
            )
        )
    out.append(Scenario("qido-small", "QIDO-RS latency, small set loaded", "qido", "small"))
    out.append(Scenario("cfind-small", "C-FIND latency, small set loaded", "cfind", "small"))
    return out


@dataclass
class RunResult:
    """One scenario run against one peer."""

    scenario: str
    peer: str
    ok: bool = False
    seconds: float = 0.0
    instances: int = 0
    mbytes: float = 0.0
    inst_per_s: float = 0.0
    mb_per_s: float = 0.0
    expected: int = 0
    counted: int | None = None
    failures: int = 0
    startup_s: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    idx = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return sorted(values)[idx]


def run_one(
    scenario: Scenario,
    peer_cls: type[Peer],
    data: dataset.DataSet,
    quick: bool,
    keep: bool,
    extra_args: Sequence[str] = (),
) -> RunResult:
    res = RunResult(scenario=scenario.key, peer=peer_cls.name)
    if scenario.kind in RETRIEVE_KINDS:
        peer_cls = RETRIEVE_PEERS[peer_cls.name]  # with the C-MOVE destination configured
    peer = peer_cls(extra_args=extra_args)
    try:
        peer.start()
    except PeerError as exc:
        res.errors.append(f"start failed: {exc}")
        peer.stop(keep=keep)
        return res
    res.startup_s = round(peer.startup_seconds, 2)
    try:
        if scenario.kind == "memory":
            _run_memory(scenario, peer, data, quick, res)
        else:
            files = data.files(scenario.set_name)
            res.expected = len(files)
            res.mbytes = data.total_bytes(scenario.set_name) / 1e6
            if scenario.kind == "stow":
                _run_stow(scenario, peer, files, res)
            elif scenario.kind in RETRIEVE_KINDS:
                _run_retrieve(scenario, peer, data, files, res)
            else:
                _run_cstore(scenario, peer, files, res)
        if not peer.alive():
            res.errors.append(f"server process died; log tail:\n{peer.log_tail()}")
        else:
            try:
                res.counted = peer.count_instances()
            except (OSError, ValueError) as exc:
                res.errors.append(f"counting instances failed: {exc!r}")
        if res.counted is not None and res.counted != res.expected:
            res.errors.append(f"peer holds {res.counted} instances, expected {res.expected}")
        if res.seconds > 0:
            res.inst_per_s = res.instances / res.seconds
            res.mb_per_s = res.mbytes / res.seconds
        res.ok = (
            not res.errors and res.failures == 0 and res.counted == res.expected and res.seconds > 0
        )
    except Exception as exc:  # report and keep going with the next run
        res.errors.append(f"bench error: {exc!r}")
    finally:
        res.log_errors = peer.log_errors()
        peer.stop(keep=keep)
    return res


def _cpu_pct(cpu_seconds: float, wall: float) -> float:
    """Client CPU time as a percentage of one core over the run's wall time."""
    return round(100.0 * cpu_seconds / wall, 1) if wall > 0 else 0.0


def _run_stow(scenario: Scenario, peer: Peer, files: list[Path], res: RunResult) -> None:
    run = run_stow(peer.http_port, peer.stow_path, files, scenario.per_request, scenario.clients)
    res.seconds = run.seconds
    res.instances = run.instances_stored
    res.failures = run.instances_failed + run.failed_requests
    res.errors += run.errors
    res.detail = {
        "requests": run.requests,
        "failed_requests": run.failed_requests,
        "failed_instances": run.instances_failed,
        "reconnects": run.reconnects,
        "latency_p50_ms": round(1000 * _percentile(run.latencies, 0.5), 2),
        "latency_p95_ms": round(1000 * _percentile(run.latencies, 0.95), 2),
        "latency_max_ms": round(1000 * max(run.latencies, default=0.0), 2),
        "client_cpu_pct": _cpu_pct(run.client_cpu_seconds, run.seconds),
    }


def _run_cstore(scenario: Scenario, peer: Peer, files: list[Path], res: RunResult) -> None:
    run = run_cstore(peer.dicom_port, peer.aet, files, scenario.clients)
    res.seconds = run.seconds
    bad_exit = [c for c in run.exit_codes if c != 0]
    res.failures = run.failures + len(bad_exit)
    # storescu does not report per-instance success: count what the peer holds afterwards
    res.instances = len(files)
    if bad_exit:
        res.errors.append(f"storescu exit codes {run.exit_codes}")
    res.errors += run.errors
    res.detail = {
        "associations": run.associations,
        "exit_codes": run.exit_codes,
        "client_cpu_pct": _cpu_pct(run.client_cpu_seconds, run.seconds),
    }


def _run_retrieve(
    scenario: Scenario, peer: Peer, data: dataset.DataSet, files: list[Path], res: RunResult
) -> None:
    load = run_cstore(peer.dicom_port, peer.aet, files, 4)
    if load.failures or any(load.exit_codes):
        res.errors.append(f"loading over C-STORE failed: {load.errors[:2]}")
        return
    studies = list(dict.fromkeys(inst.study_uid for inst in data.sets[scenario.set_name]))
    run = run_retrieve(scenario.kind, peer.dicom_port, peer.aet, studies)
    res.seconds = run.seconds
    res.instances = run.completed
    res.failures = run.failed + (run.completed != len(files))
    res.errors += run.errors
    res.detail = {
        "studies": run.requests,
        "completed": run.completed,
        "failed": run.failed,
        "load_seconds": round(load.seconds, 2),
        "client_cpu_pct": _cpu_pct(run.client_cpu_seconds, run.seconds),
    }


def _run_memory(
    scenario: Scenario, peer: Peer, data: dataset.DataSet, quick: bool, res: RunResult
) -> None:
    shape = shapes(quick)[scenario.memory_shape]
    run = run_memory(peer.pid, peer.http_port, peer.stow_path, data.seed, shape)
    res.expected = shape.instances
    res.seconds = run.seconds
    res.instances = run.stored
    res.mbytes = run.body_bytes / 1e6
    res.failures = run.failed + (run.status != 200)
    res.errors += run.errors
    res.detail = {
        "status": run.status,
        "baseline_rss_mb": round(run.baseline_rss_kb / 1024, 1),
        "peak_sampled_rss_mb": round(run.peak_sampled_rss_kb / 1024, 1),
        "peak_hwm_mb": round(run.peak_hwm_kb / 1024, 1),
        "max_process_hwm_mb": round(run.max_process_hwm_kb / 1024, 1),
        "processes": run.processes,
        "frames_per_instance": shape.frames,
    }


def _median_result(runs: list[RunResult]) -> RunResult:
    """The run with the median throughput (failed runs win: failures must show)."""
    failed = [r for r in runs if not r.ok]
    if failed:
        return failed[0]
    if all("peak_hwm_mb" in r.detail for r in runs):  # memory: report the worst peak
        return max(runs, key=lambda r: float(r.detail["peak_hwm_mb"]))
    ordered = sorted(runs, key=lambda r: r.inst_per_s)
    chosen = ordered[(len(ordered) - 1) // 2]
    if len(runs) > 1:
        chosen.detail["repeats_inst_per_s"] = [round(r.inst_per_s, 1) for r in runs]
    return chosen


def warm_cache(data: dataset.DataSet) -> None:
    for name in data.sets:
        for path in data.files(name):
            path.read_bytes()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Benchmark of dicomcloud against Orthanc (STOW-RS, C-STORE, memory, C-GET, C-MOVE)."
        ),
    )
    p.add_argument("--quick", action="store_true", help="~10%% of the data: a fast smoke run")
    p.add_argument(
        "--peers",
        default="orthanc,dicomcloud",
        help="comma-separated peers to run (default: orthanc,dicomcloud)",
    )
    p.add_argument(
        "--scenarios",
        default="*",
        help="comma-separated glob patterns over scenario keys (see --list)",
    )
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--repeat", type=int, default=1, help="runs per scenario and peer (median)")
    p.add_argument("--seed", type=int, default=dataset.DEFAULT_SEED)
    p.add_argument("--no-memory", action="store_true", help="skip the memory scenarios")
    p.add_argument(
        "--search-repeat",
        type=int,
        default=0,
        help="timed runs per search query and peer (default 50, 20 with --quick)",
    )
    p.add_argument("--output", type=Path, help="markdown report (default depends on --quick)")
    p.add_argument("--keep", action="store_true", help="keep the peers' storage directories")
    p.add_argument(
        "--dicomcloud-args",
        default="",
        help='extra arguments for `dicomcloud serve`, e.g. "--workers 2"',
    )
    p.add_argument(
        "--orthanc-args", default="", help='extra Orthanc command-line options, e.g. "--verbose"'
    )
    return p.parse_args(argv)


def select(args: argparse.Namespace) -> list[Scenario]:
    patterns = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    chosen = [
        s for s in all_scenarios() if any(fnmatch.fnmatchcase(s.key, pat) for pat in patterns)
    ]
    if args.no_memory:
        chosen = [s for s in chosen if s.kind != "memory"]
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from bench import report, search_report  # after arg parsing: keeps --help fast

    if args.list:
        for s in all_scenarios():
            print(f"{s.key:24} {s.title}")
        return 0
    scenarios = select(args)
    if not scenarios:
        print("no scenario matches", file=sys.stderr)
        return 2
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in PEERS]
    if unknown:
        print(f"unknown peer(s): {unknown}; choose from {list(PEERS)}", file=sys.stderr)
        return 2
    peers: list[type[Peer]] = []
    unavailable: dict[str, str] = {}
    for name in wanted:
        ok, why = PEERS[name].available()
        if ok:
            peers.append(PEERS[name])
        else:
            unavailable[name] = why
            print(f"peer {name} not runnable: {why}")
    if any(s.kind == "cstore" for s in scenarios) and storescu_path() is None:
        print("dcmtk storescu not found: skipping C-STORE scenarios")
        scenarios = [s for s in scenarios if s.kind not in ("cstore", *RETRIEVE_KINDS)]
    retrieve_ok, why_not = tools_available()
    if not retrieve_ok and any(s.kind in RETRIEVE_KINDS for s in scenarios):
        print(f"dcmtk retrieve tools not found ({why_not}): skipping C-GET / C-MOVE")
        scenarios = [s for s in scenarios if s.kind not in RETRIEVE_KINDS]
    if not peers:
        print("no peer can run", file=sys.stderr)
        return 2

    started = datetime.now(UTC)
    t_start = time.monotonic()
    data = dataset.ensure(args.seed, args.quick)
    warm_cache(data)
    searches = [s for s in scenarios if s.kind in SEARCH_TARGETS]
    scenarios = [s for s in scenarios if s.kind not in SEARCH_TARGETS]
    results: dict[str, dict[str, RunResult]] = {}
    for i, sc in enumerate(scenarios):
        # alternate which peer goes first, so slow drift on a noisy machine evens out
        order = peers if i % 2 == 0 else list(reversed(peers))
        results[sc.key] = {}
        for peer_cls in order:
            runs: list[RunResult] = []
            extra = shlex.split(getattr(args, f"{peer_cls.name}_args", ""))
            for _ in range(max(1, args.repeat)):
                runs.append(run_one(sc, peer_cls, data, args.quick, args.keep, extra))
            res = _median_result(runs)
            results[sc.key][peer_cls.name] = res
            print(report.progress_line(sc, res), flush=True)

    search_run = None
    if searches:
        from bench.search import run_search

        search_run = run_search(
            peers,
            data,
            qido=any(s.kind == "qido" for s in searches),
            cfind=any(s.kind == "cfind" for s in searches),
            repeat=args.search_repeat or (20 if args.quick else 50),
            extra_args={p.name: shlex.split(getattr(args, f"{p.name}_args", "")) for p in peers},
            keep=args.keep,
        )
    output = args.output or (
        OUT_DIR / "RESULTS-quick.md" if args.quick else BENCH_DIR / "RESULTS.md"
    )
    command = _command_line(argv)
    meta = report.machine_notes(started, time.monotonic() - t_start, command, args, data)
    meta["unavailable"] = unavailable
    md = report.render_markdown(scenarios, results, meta, [p.name for p in peers])
    search_md = search_report.render_search(search_run, meta) if search_run else None
    old = output.read_text() if output.exists() else None
    md = search_report.merge_results(old, md if scenarios else None, search_md)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(md)
    raw = OUT_DIR / ("results-quick.json" if args.quick else "results.json")
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(
        json.dumps(
            {
                "meta": meta,
                "results": {k: {p: asdict(r) for p, r in v.items()} for k, v in results.items()},
                "search": asdict(search_run) if search_run else None,
            },
            indent=1,
            default=str,
        )
    )
    if scenarios:
        report.print_summary(scenarios, results, [p.name for p in peers])
    if search_run:
        search_report.print_search_summary(search_run)
    print(
        f"\nreport: {output.relative_to(REPO_ROOT) if output.is_relative_to(REPO_ROOT) else output}"
    )
    print(f"raw results: {raw.relative_to(REPO_ROOT)}")
    return 0


def _command_line(argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join([".venv/bin/python -m bench", *(shlex.quote(a) for a in args)])
