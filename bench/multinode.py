"""Scale-out benchmark (issue 5 point 8): ingest rate and QIDO-RS latency of the
multi-node recipe (deploy/multinode: nginx, 2 web nodes, a DIMSE node and a worker on
PostgreSQL + Redis + Kafka + S3) against the embedded default (one ``dicomcloud
serve``: SQLite, files, in-process events) and Orthanc, on the same host; and C-STORE
ingest with 1, 2 and 3 DIMSE processes.

    .venv/bin/python -m bench.multinode            # small set (3,000 x 64x64), all targets
    .venv/bin/python -m bench.multinode --quick --limit 60 --targets embedded,multinode

Every target starts fresh (empty storage, a new PostgreSQL database for the multi-node
ones) and is loaded with the same files: the first half by STOW-RS (``--per-request``
instances per request, ``--clients`` clients), the second half by C-STORE (dcmtk
storescu, ``--associations`` associations); then the QIDO-RS queries of bench/qido.py
are timed.  The ``dimse-N`` targets are the recipe with N DIMSE processes, loaded with
every file by C-STORE only.  Kafka (Tansu) and S3 (SeaweedFS) are started once for the
run unless ``--kafka`` / ``--s3-endpoint`` name real ones.

On one host every node competes for the same cores: the recipe shows what the extra
hops (nginx, PostgreSQL, S3 over HTTP, Kafka) cost and what several processes gain; it
is not a measurement of a real cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploy.multinode.cluster import Cluster, ClusterConfig, ClusterError
from deploy.multinode.services import (
    S3Target,
    drop_postgresql_database,
    start_seaweedfs,
    start_tansu,
    stop_process,
)

from bench import OUT_DIR, REPO_ROOT, dataset
from bench.cstore import run_cstore, storescu_path
from bench.peers import DicomcloudPeer, OrthancPeer, Peer, PeerError, http_get
from bench.qido import build_queries, time_query
from bench.search import pick_values
from bench.stow import run_stow

TARGETS = ("embedded", "multinode", "orthanc", "dimse-1", "dimse-2", "dimse-3")
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
#: the QIDO-RS queries timed (keys of bench/qido.py build_queries)
QIDO_KEYS = ("patient-id", "study-date", "ohif-list", "all-studies", "series-instances")


@dataclass
class TargetResult:
    target: str
    ok: bool = False
    startup_s: float = 0.0
    stow_inst_per_s: float = 0.0
    stow_instances: int = 0
    cstore_inst_per_s: float = 0.0
    cstore_instances: int = 0
    held: int | None = None
    qido_p50_ms: dict[str, float] = field(default_factory=dict)
    qido_p95_ms: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class ClusterTarget:
    """The recipe, seen as a bench peer (nginx's port, the DIMSE node's port)."""

    aet = "DICOMCLOUD"
    stow_path = "/dicom-web/studies"

    def __init__(self, name: str, kafka: str, s3: S3Target, dimse_processes: int) -> None:
        self.name = name
        self.database = f"{POSTGRES}/bench_multinode_{uuid.uuid4().hex[:10]}"
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=OUT_DIR / "tmp"))
        self.cluster = Cluster(
            ClusterConfig(
                work_dir=self.work_dir,
                index_url=self.database,
                kafka=kafka,
                s3=s3,
                prefix=f"bench-{uuid.uuid4().hex[:10]}",
                ae_title=self.aet,
                dimse_processes=dimse_processes,
                log_level="WARNING",
            )
        )
        self.startup_seconds = 0.0

    @property
    def http_port(self) -> int:
        return self.cluster.http_port

    @property
    def dicom_port(self) -> int:
        return self.cluster.dicom_port

    def start(self) -> None:
        t0 = time.monotonic()
        self.cluster.start()
        self.startup_seconds = time.monotonic() - t0

    def stop(self) -> None:
        self.cluster.stop()
        asyncio.run(drop_postgresql_database(self.database))
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def count_instances(self) -> int | None:
        return qido_instance_count(self.http_port)

    def log_tail(self) -> str:
        return "\n".join(n.log()[-800:] for n in self.cluster.nodes.values())


def qido_instance_count(port: int) -> int | None:
    """Instances held, summed over the study list (NumberOfStudyRelatedInstances)."""
    total, offset = 0, 0
    while True:
        status, body = http_get(
            port,
            f"/dicom-web/studies?includefield=00201208&limit=100&offset={offset}",
            timeout=60.0,
        )
        if status == 204:
            return total
        if status != 200:
            return None
        rows = json.loads(body)
        total += sum(int(r.get("00201208", {}).get("Value", [0])[0]) for r in rows)
        offset += len(rows)
        if len(rows) < 100:
            return total


def measure(
    target: Peer | ClusterTarget,
    name: str,
    files: Sequence[Path],
    data: dataset.DataSet,
    args: argparse.Namespace,
    *,
    cstore_only: bool,
) -> TargetResult:
    res = TargetResult(name)
    try:
        target.start()
    except (PeerError, ClusterError, RuntimeError) as exc:
        res.errors.append(f"start failed: {exc}"[:2000])
        return res
    try:
        res.startup_s = round(target.startup_seconds, 2)
        half = 0 if cstore_only else len(files) // 2
        if half:
            stow = run_stow(
                target.http_port, target.stow_path, files[:half], args.per_request, args.clients
            )
            res.stow_instances = stow.instances_stored
            res.stow_inst_per_s = round(stow.instances_stored / stow.seconds, 1)
            res.errors += stow.errors[:3]
        cstore = run_cstore(target.dicom_port, target.aet, files[half:], args.associations)
        res.cstore_instances = len(files) - half - cstore.failures
        res.cstore_inst_per_s = round((len(files) - half) / cstore.seconds, 1)
        res.errors += cstore.errors[:3]
        if any(cstore.exit_codes):
            res.errors.append(f"storescu exit codes {cstore.exit_codes}")
        res.held = target.count_instances()
        if res.held != len(files):
            res.errors.append(f"holds {res.held} instances after storing {len(files)}")
        if not cstore_only:
            queries = [q for q in build_queries(pick_values(data)) if q.key in QIDO_KEYS]
            for query in queries:
                timing = time_query(target.http_port, query, args.repeat)
                res.qido_p50_ms[query.key] = round(timing.p50_ms(), 2)
                res.qido_p95_ms[query.key] = round(timing.p95_ms(), 2)
                res.errors += timing.errors[:2]
        res.ok = not res.errors
    except Exception as exc:  # a failed target is reported, the others still run
        res.errors.append(f"{type(exc).__name__}: {exc}\n{target.log_tail()}"[:3000])
    finally:
        target.stop()
    return res


def render(results: Sequence[TargetResult], meta: dict[str, Any]) -> str:
    lines = [
        "# Scale-out: the multi-node recipe vs the embedded default vs Orthanc",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['cpus']} CPUs). "
        f"{meta['files']} instances of 64x64 per target: half by STOW-RS "
        f"({meta['per_request']}/request, {meta['clients']} clients), half by C-STORE "
        f"({meta['associations']} associations); `dimse-N`: the recipe with N DIMSE "
        "processes, every file by C-STORE. QIDO-RS: p50 / p95 of repeated queries (after "
        "warm-up, so mostly cache hits). All processes share one host.",
        "",
        "| target | STOW-RS inst/s | C-STORE inst/s | held | "
        + " | ".join(f"{k} p50/p95 ms" for k in QIDO_KEYS)
        + " | start s | errors |",
        "|---|---|---|---|" + "---|" * len(QIDO_KEYS) + "---|---|",
    ]
    for r in results:
        qido = [
            f"{r.qido_p50_ms[k]:.1f} / {r.qido_p95_ms[k]:.1f}" if k in r.qido_p50_ms else "-"
            for k in QIDO_KEYS
        ]
        errors = "; ".join(e.splitlines()[0][:120] for e in r.errors[:2]) if r.errors else ""
        lines.append(
            f"| {r.target} | {r.stow_inst_per_s or '-'} | {r.cstore_inst_per_s or '-'} | "
            f"{r.held} | " + " | ".join(qido) + f" | {r.startup_s} | {errors} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.multinode", description=__doc__)
    p.add_argument("--quick", action="store_true", help="the quick dataset (300 small)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N small files")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"of {', '.join(TARGETS)}")
    p.add_argument("--per-request", type=int, default=10)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--associations", type=int, default=4)
    p.add_argument("--repeat", type=int, default=20, help="timed runs per QIDO-RS query")
    p.add_argument("--kafka", help="Kafka bootstrap host:port (default: start Tansu)")
    p.add_argument("--s3-endpoint", help="S3 endpoint (default: start SeaweedFS)")
    p.add_argument("--s3-bucket", default="dicomcloud")
    p.add_argument("--output", type=Path, help="markdown report (default under bench/out/)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(names) - set(TARGETS)
    if unknown:
        print(f"unknown targets {sorted(unknown)}; known: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    if storescu_path() is None:
        print("dcmtk storescu not found (scripts/bootstrap.sh bench)", file=sys.stderr)
        return 1
    data = dataset.ensure(quick=args.quick)
    files = data.files("small")[: args.limit or None]
    (OUT_DIR / "tmp").mkdir(parents=True, exist_ok=True)
    services: list[Any] = []
    kafka, s3 = args.kafka, None
    if args.s3_endpoint:
        s3 = S3Target(
            args.s3_endpoint,
            args.s3_bucket,
            os.environ.get("AWS_ACCESS_KEY_ID", ""),
            os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        )
    results: list[TargetResult] = []
    services_dir = Path(tempfile.mkdtemp(prefix="services-", dir=OUT_DIR / "tmp"))
    try:
        if any(n.startswith(("multinode", "dimse")) for n in names):
            if kafka is None:
                process, kafka = start_tansu(services_dir / "tansu.log")
                services.append(process)
            if s3 is None:
                process, s3 = start_seaweedfs(services_dir)
                services.append(process)
        for name in names:
            print(f"[{name}] {len(files)} instances ...", flush=True)
            target: Peer | ClusterTarget
            if name == "embedded":
                target = DicomcloudPeer()
            elif name == "orthanc":
                available, why = OrthancPeer.available()
                if not available:
                    results.append(TargetResult(name, errors=[f"not run: {why}"]))
                    continue
                target = OrthancPeer()
            else:
                assert kafka is not None and s3 is not None
                processes = int(name.split("-")[1]) if name.startswith("dimse-") else 1
                target = ClusterTarget(name, kafka, s3, processes)
            result = measure(target, name, files, data, args, cstore_only=name.startswith("dimse-"))
            results.append(result)
            print(f"[{name}] {json.dumps(asdict(result))[:600]}", flush=True)
    finally:
        for process in reversed(services):
            stop_process(process)
        shutil.rmtree(services_dir, ignore_errors=True)
    meta = {
        "command": "python -m bench.multinode " + " ".join(argv or sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "files": len(files),
        "per_request": args.per_request,
        "clients": args.clients,
        "associations": args.associations,
    }
    report = render(results, meta)
    default = "RESULTS-multinode.md" if not (args.quick or args.limit) else None
    output = args.output or (
        REPO_ROOT / "bench" / default if default else OUT_DIR / "RESULTS-multinode-quick.md"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    (OUT_DIR / "multinode.json").write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2)
    )
    print(report)
    print(f"written to {output}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
