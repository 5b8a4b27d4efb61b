"""Rendering: progress lines, the stdout summary and bench/RESULTS.md."""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as pkg_version
from typing import Any

from bench import REPO_ROOT, dataset
from bench.peers import PEERS, dcmtk_version
from bench.run import MEMORY_TARGET_MB, RunResult, Scenario

Results = dict[str, dict[str, RunResult]]
BASE = "orthanc"
CANDIDATE = "dicomcloud"


def progress_line(sc: Scenario, r: RunResult) -> str:
    state = "ok" if r.ok else "FAILED"
    if sc.kind == "memory":
        peak = r.detail.get("peak_hwm_mb", 0.0)
        return (
            f"[{state:6}] {sc.key:22} {r.peer:10} {r.seconds:7.2f} s  "
            f"peak RSS {peak:8.1f} MB  {r.mb_per_s:7.1f} MB/s"
        )
    line = (
        f"[{state:6}] {sc.key:22} {r.peer:10} {r.seconds:7.2f} s  "
        f"{r.inst_per_s:8.1f} inst/s  {r.mb_per_s:7.1f} MB/s"
    )
    if not r.ok:
        line += f"  failures={r.failures} counted={r.counted}/{r.expected}"
        if r.errors:
            line += f"  first error: {r.errors[0][:160]!r}"
    return line


def _fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def _cell(r: RunResult | None, attr: str) -> str:
    if r is None:
        return "not run"
    if not r.ok:
        return f"FAILED ({r.failures or len(r.errors)})"
    return _fmt(float(getattr(r, attr)))


def _ratio(sc: Scenario, row: dict[str, RunResult]) -> tuple[float | None, str]:
    base, cand = row.get(BASE), row.get(CANDIDATE)
    if base is None or cand is None:
        return None, "n/a"
    if not (base.ok and cand.ok):
        return None, "n/a"
    if sc.kind == "memory":
        b, c = base.detail.get("peak_hwm_mb", 0.0), cand.detail.get("peak_hwm_mb", 0.0)
        return (c / b if b else None), (f"{c / b:.2f}x" if b else "n/a")
    if base.inst_per_s <= 0:
        return None, "n/a"
    ratio = cand.inst_per_s / base.inst_per_s
    return ratio, f"{ratio:.2f}x"


def _met(sc: Scenario, row: dict[str, RunResult]) -> str:
    cand = row.get(CANDIDATE)
    if cand is None:
        return "not run"
    if not cand.ok:
        return "**no** (failures)"
    if sc.kind == "memory":
        return "yes" if cand.detail.get("peak_hwm_mb", 1e9) < MEMORY_TARGET_MB else "**no**"
    ratio, _ = _ratio(sc, row)
    if ratio is None:
        return "n/a"
    need = 2.0 if sc.kind == "stow" else 1.0
    return "yes" if ratio >= need else "**no**"


def _throughput_rows(scenarios: Sequence[Scenario], results: Results) -> list[list[str]]:
    rows: list[list[str]] = []
    for sc in scenarios:
        if sc.kind == "memory":
            continue
        row = results.get(sc.key, {})
        rows.append(
            [
                sc.title,
                _cell(row.get(BASE), "inst_per_s"),
                _cell(row.get(BASE), "mb_per_s"),
                _cell(row.get(CANDIDATE), "inst_per_s"),
                _cell(row.get(CANDIDATE), "mb_per_s"),
                _ratio(sc, row)[1],
                sc.target,
                _met(sc, row),
            ]
        )
    return rows


def _mem_cell(r: RunResult | None) -> str:
    if r is None:
        return "not run"
    if not r.ok:
        return f"FAILED ({r.failures or len(r.errors)})"
    return _fmt(float(r.detail.get("peak_hwm_mb", 0.0)))


def _memory_rows(scenarios: Sequence[Scenario], results: Results) -> list[list[str]]:
    rows: list[list[str]] = []
    for sc in scenarios:
        if sc.kind != "memory":
            continue
        row = results.get(sc.key, {})
        any_run = next(iter(row.values()), None)
        size = _fmt(any_run.mbytes, 0) if any_run else "?"
        n = str(any_run.expected) if any_run else "?"
        rows.append(
            [
                sc.title,
                f"{n} inst, {size} MB",
                _mem_cell(row.get(BASE)),
                _mem_cell(row.get(CANDIDATE)),
                _ratio(sc, row)[1],
                _cell(row.get(BASE), "mb_per_s"),
                _cell(row.get(CANDIDATE), "mb_per_s"),
                sc.target,
                _met(sc, row),
            ]
        )
    return rows


THROUGHPUT_HEAD = [
    "scenario",
    "Orthanc inst/s",
    "Orthanc MB/s",
    "dicomcloud inst/s",
    "dicomcloud MB/s",
    "ratio (dc/Orthanc inst/s)",
    "target",
    "met?",
]
MEMORY_HEAD = [
    "scenario",
    "body",
    "Orthanc peak RSS MB",
    "dicomcloud peak RSS MB",
    "ratio (dc/Orthanc)",
    "Orthanc MB/s",
    "dicomcloud MB/s",
    "target",
    "met?",
]


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _details_rows(scenarios: Sequence[Scenario], results: Results) -> list[list[str]]:
    rows: list[list[str]] = []
    for sc in scenarios:
        for peer, r in results.get(sc.key, {}).items():
            d = r.detail
            if sc.kind == "stow":
                extra = (
                    f"{d.get('requests', 0)} req, p50 {d.get('latency_p50_ms', 0)} ms, "
                    f"p95 {d.get('latency_p95_ms', 0)} ms, max {d.get('latency_max_ms', 0)} ms"
                )
                extra += f", client CPU {d.get('client_cpu_pct', 0)}% of a core"
                if d.get("reconnects"):
                    extra += f", {d['reconnects']} reconnects"
            elif sc.kind == "cstore":
                extra = (
                    f"exit codes {d.get('exit_codes')}, "
                    f"storescu CPU {d.get('client_cpu_pct', 0)}% of a core"
                )
            else:
                extra = (
                    f"HTTP {d.get('status')}, baseline {d.get('baseline_rss_mb')} MB, "
                    f"sampled peak {d.get('peak_sampled_rss_mb')} MB, "
                    f"VmHWM {d.get('peak_hwm_mb')} MB over {d.get('processes')} process(es) "
                    f"(largest single process {d.get('max_process_hwm_mb')} MB)"
                )
            if "repeats_inst_per_s" in d:
                extra += f", repeats inst/s {d['repeats_inst_per_s']}"
            rows.append(
                [
                    sc.key,
                    peer,
                    "ok" if r.ok else "FAILED",
                    f"{r.startup_s:.1f}",
                    f"{r.seconds:.2f}",
                    _fmt(r.inst_per_s),
                    _fmt(r.mb_per_s),
                    f"{r.counted if r.counted is not None else '?'}/{r.expected}",
                    str(r.failures),
                    extra,
                ]
            )
    return rows


def _issues(scenarios: Sequence[Scenario], results: Results) -> list[str]:
    out: list[str] = []
    for sc in scenarios:
        for peer, r in results.get(sc.key, {}).items():
            if r.errors:
                out.append(f"- `{sc.key}` on {peer}:")
                for e in r.errors[:5]:
                    out.append("  - " + e.replace("\n", " ⏎ ")[:400])
            if r.log_errors:
                out.append(f"- `{sc.key}` on {peer}: error-looking server log lines:")
                for e in r.log_errors[:5]:
                    out.append("  - `" + e.replace("`", "'")[:300] + "`")
    return out


def _run_text(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _pkg(name: str) -> str:
    try:
        return pkg_version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_notes(
    started: datetime,
    elapsed: float,
    command: str,
    args: argparse.Namespace,
    data: dataset.DataSet,
) -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    manifest = data.root / dataset.MANIFEST_NAME
    sets = {
        name: f"{len(rows)} instances, {data.total_bytes(name) / 1e6:.1f} MB"
        for name, rows in data.sets.items()
    }
    return {
        "date": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "elapsed_s": round(elapsed, 1),
        "command": command,
        "quick": args.quick,
        "repeat": args.repeat,
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "loadavg_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "pydicom": _pkg("pydicom"),
        "pynetdicom": _pkg("pynetdicom"),
        "orthanc": PEERS["orthanc"].version(),
        "dicomcloud": PEERS["dicomcloud"].version(),
        "dcmtk": dcmtk_version(),
        "bench_git": _run_text(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]),
        "seed": data.seed,
        "dataset": sets,
        "dataset_dir": str(data.root.relative_to(REPO_ROOT)),
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
        if manifest.exists()
        else "?",
    }


def render_markdown(
    scenarios: Sequence[Scenario], results: Results, meta: dict[str, Any], peers: list[str]
) -> str:
    parts: list[str] = []
    parts.append("# Ingest benchmark: dicomcloud vs Orthanc\n")
    parts.append(
        f"Generated by `{meta['command']}` (run from the repository root) on {meta['date']}, "
        f"{'quick (~10% data) ' if meta['quick'] else ''}run took {meta['elapsed_s']} s. "
        "Do not edit by hand: re-run the bench.\n"
    )
    parts.append(
        "The machine is shared and noisy: compare the **ratios** (both peers measured in the "
        "same run, back to back, each on a freshly started empty server), not absolute "
        "numbers. Ratio = dicomcloud / Orthanc.\n"
    )
    if meta.get("unavailable"):
        for name, why in meta["unavailable"].items():
            parts.append(f"> **{name} was not run**: {why}\n")
    parts.append("## Ingest throughput\n")
    parts.append(_md_table(THROUGHPUT_HEAD, _throughput_rows(scenarios, results)) + "\n")
    mem_rows = _memory_rows(scenarios, results)
    if mem_rows:
        parts.append("## Peak server memory during one large STOW-RS request\n")
        parts.append(_md_table(MEMORY_HEAD, mem_rows) + "\n")
        parts.append(
            "Peak RSS = sum of VmHWM (/proc/PID/status) over the server process and its "
            "children, read after the request; it includes start-up. The body is streamed "
            "by the client with a fixed Content-Length.\n"
        )
    parts.append("## Every run\n")
    parts.append(
        _md_table(
            [
                "scenario",
                "peer",
                "status",
                "start-up s",
                "seconds",
                "inst/s",
                "MB/s",
                "held/expected",
                "failures",
                "details",
            ],
            _details_rows(scenarios, results),
        )
        + "\n"
    )
    issues = _issues(scenarios, results)
    parts.append("## Errors and warnings seen\n")
    parts.append(
        (
            "\n".join(issues)
            if issues
            else "None: every request returned 200, every "
            "storescu exited 0, every peer held the expected instance count."
        )
        + "\n"
    )
    parts.append("## Machine and versions\n")
    for key in (
        "nproc",
        "cpu",
        "memory",
        "kernel",
        "loadavg_end",
        "python",
        "pydicom",
        "pynetdicom",
        "orthanc",
        "dcmtk",
        "dicomcloud",
        "bench_git",
    ):
        parts.append(f"- {key}: {meta.get(key)}")
    parts.append(
        f"- dataset: seed {meta['seed']}, {meta['dataset']}, in `{meta['dataset_dir']}` "
        f"(manifest sha256 {meta['manifest_sha256']})"
    )
    parts.append(f"- repeats per scenario and peer: {meta['repeat']} (median reported)")
    parts.append(f"- peers: {', '.join(peers)}\n")
    parts.append("## Method\n")
    parts.append(
        "- Every scenario starts each peer fresh on free loopback ports with an empty "
        "temporary storage directory (`bench/out/tmp/`), which is deleted afterwards. "
        "`TCP_NODELAY=1` is set for both servers and for storescu.\n"
        "- Orthanc runs with its default durability settings plus the DICOMweb plugin.\n"
        "- STOW-RS: multipart/related bodies built in memory before the clock starts; "
        "N client processes (`http.client`, one keep-alive connection each) send "
        "contiguous slices; time = first request to last response. Every response must be "
        "200 without a FailedSOPSequence. Client CPU (all client processes, as % of one "
        "core) is listed per run to show the client is not the bottleneck.\n"
        "- C-STORE: dcmtk `storescu -nh` with the file list on the command line, files sent "
        "as stored (explicit VR little endian); N processes = N associations over N "
        "slices; time includes storescu start-up; every exit code must be 0.\n"
        "- After every run the peer must hold exactly the expected number of instances "
        "(Orthanc: `GET /statistics`; dicomcloud: `.dcm` files in its data dir, or QIDO).\n"
        "- MB/s counts DICOM Part-10 bytes, not multipart or PDU overhead.\n"
        "- Targets: STOW-RS >= 2x Orthanc inst/s; C-STORE >= Orthanc inst/s; dicomcloud "
        f"peak RSS < {MEMORY_TARGET_MB:.0f} MB during one ~1 GB STOW (full run).\n"
    )
    return "\n".join(parts)


def print_summary(scenarios: Sequence[Scenario], results: Results, peers: list[str]) -> None:
    """The two summary tables on stdout (rich if available), keyed by scenario key."""
    keyed = [Scenario(**{**sc.__dict__, "title": sc.key}) for sc in scenarios]
    rows = _throughput_rows(keyed, results)
    mem = _memory_rows(keyed, results)
    short = {
        "ratio (dc/Orthanc inst/s)": "ratio",
        "ratio (dc/Orthanc)": "ratio",
        "Orthanc peak RSS MB": "Orthanc peak MB",
        "dicomcloud peak RSS MB": "dc peak MB",
        "dicomcloud inst/s": "dc inst/s",
        "dicomcloud MB/s": "dc MB/s",
    }
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(_md_table(THROUGHPUT_HEAD, rows))
        if mem:
            print(_md_table(MEMORY_HEAD, mem))
        return
    console = Console(width=150)
    for title, head, body in (
        ("Ingest throughput (ratio = dicomcloud / Orthanc)", THROUGHPUT_HEAD, rows),
        ("Peak server RSS during one large STOW", MEMORY_HEAD, mem),
    ):
        if not body:
            continue
        table = Table(title=title)
        for h in head:
            left = h in ("scenario", "target", "body")
            table.add_column(short.get(h, h), justify="left" if left else "right", no_wrap=True)
        for r in body:
            table.add_row(*(c.replace("**", "") for c in r))
        console.print(table)
