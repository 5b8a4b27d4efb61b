"""Search at scale: study-list QIDO-RS latency on a synthetic index of 1,000,000
instances (``bench/loader.py``), on PostgreSQL and on SQLite.

``dicomcloud serve`` is started on the loaded database (``--config`` with ``[index]
url``), and each query of ``bench/qido.py`` is sent over HTTP (warm-up, then ``repeat``
timed runs on one keep-alive connection).  Study lists carry ``limit`` (100 by default,
as a study-list client pages; OHIF asks for 101): without it "all studies" would be
50,000 results.  Targets (issue 3 point 10): every study-list query p95 under 50 ms on
PostgreSQL and under 150 ms on SQLite.

``--explain`` also prints the plan of every study-level search statement (PostgreSQL
``EXPLAIN (ANALYZE, BUFFERS)``, SQLite ``EXPLAIN QUERY PLAN``), compiled by the index
itself (``SqlIndex._search_statement``) so it is exactly what the server runs.

Usage::

    python -m bench.scale --load                # load both backends, then measure
    python -m bench.scale --backend sqlite --explain
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from bench import BENCH_DIR, REPO_ROOT
from bench.loader import (
    PG_DATABASE,
    SCALE_DIR,
    LoadReport,
    ScaleSpec,
    default_sqlite_path,
    load_postgresql,
    load_saved,
    load_sqlite,
    save_report,
)
from bench.peers import DicomcloudPeer
from bench.qido import QidoQuery, SearchValues, build_queries, percentile, time_query

TARGET_MS = {"postgresql": 50.0, "sqlite": 150.0}
TENANT = "default"


def search_values(report: LoadReport, limit: int) -> SearchValues:
    v = report.values
    return SearchValues(
        patient_id=v.patient_id,
        name_pattern=v.name_prefix,
        date_low=v.date_low,
        date_high=v.date_high,
        modality="CT",
        accession_number=v.accession_number,
        study_uid=v.study_uid,
        series_uid=v.series_uid,
        page_offset=50,
        list_limit=limit,
    )


@dataclass
class ScaleRow:
    key: str
    title: str
    study_list: bool
    count: int
    p50_ms: float
    p95_ms: float
    errors: list[str] = field(default_factory=list)
    service_p50_ms: float | None = None


@dataclass
class ScaleRun:
    backend: str
    url: str
    rows: dict[str, int]
    load_seconds: float
    size_mb: float
    repeat: int
    limit: int
    results: list[ScaleRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    plans: dict[str, str] = field(default_factory=dict)


def _config(report: LoadReport, workdir: Path) -> Path:
    path = workdir / f"scale-{report.backend}.toml"
    path.write_text(f'[index]\nurl = "{report.url}"\n')
    return path


def measure(report: LoadReport, repeat: int, limit: int) -> ScaleRun:
    """Serve the loaded index and time every query of ``build_queries``."""
    run = ScaleRun(
        report.backend, report.url, report.rows, report.seconds, report.size_mb, repeat, limit
    )
    SCALE_DIR.mkdir(parents=True, exist_ok=True)
    peer = DicomcloudPeer(extra_args=["--config", str(_config(report, SCALE_DIR))])
    try:
        peer.start()
        for query in build_queries(search_values(report, limit)):
            t = time_query(peer.http_port, query, repeat, warmup=3)
            run.results.append(
                ScaleRow(
                    query.key,
                    query.title,
                    query.study_list,
                    t.count,
                    round(t.p50_ms(), 2),
                    round(t.p95_ms(), 2),
                    t.errors[:3],
                )
            )
        if not peer.alive():
            run.errors.append(f"server died:\n{peer.log_tail()}")
        run.errors += peer.log_errors(5)
    except Exception as exc:  # report it and keep the other backend's numbers
        run.errors.append(f"{exc!r}\n{peer.log_tail()}")
    finally:
        peer.stop()
    return run


# -- the QueryService alone (no HTTP, no JSON) -----------------------------------------


def parsed_query(query: QidoQuery) -> tuple[object, object]:
    """The ``Query`` of a QIDO query as the HTTP route builds it, and its level."""
    from dicomcloud.domain.query import QueryLevel, parse_qido
    from dicomcloud.services.query import SEARCH_KEYS

    level = {
        "studies": QueryLevel.STUDY,
        "series": QueryLevel.SERIES,
        "instances": QueryLevel.IMAGE,
    }[query.path.rstrip("/").rsplit("/", 1)[-1]]
    params = parse_qsl(urlsplit(query.target()).query)
    parts = query.path.strip("/").split("/")
    if len(parts) >= 2:
        params.append(("StudyInstanceUID", parts[1]))
    if len(parts) >= 4:
        params.append(("SeriesInstanceUID", parts[3]))
    return parse_qido(level, params, known=SEARCH_KEYS[level]), level


async def _time_service(url: str, queries: Sequence[QidoQuery], repeat: int) -> dict[str, float]:
    from dicomcloud.index.sql_index import SqlIndex
    from dicomcloud.services.query import QueryService

    index = SqlIndex.from_url(url)
    service = QueryService(index)
    out: dict[str, float] = {}
    try:
        for query in queries:
            parsed, _ = parsed_query(query)
            times = []
            for i in range(repeat + 3):
                t0 = time.perf_counter()
                await service.search(TENANT, parsed)  # type: ignore[arg-type]
                if i >= 3:
                    times.append(time.perf_counter() - t0)
            out[query.key] = 1000 * percentile(times, 0.5)
    finally:
        await index.close()
    return out


def time_service(report: LoadReport, repeat: int, limit: int) -> dict[str, float]:
    """p50 ms of every query through ``QueryService`` in this process (the index's share
    of the HTTP latency)."""
    return asyncio.run(
        _time_service(report.url, build_queries(search_values(report, limit)), repeat)
    )


# -- query plans --------------------------------------------------------------------


def _statement_sql(query: QidoQuery, dialect_name: str) -> str:
    """The SQL the index runs for a study-level ``query`` (literal values inlined)."""
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.dialects.postgresql import asyncpg

    from dicomcloud.domain.query import QueryLevel, parse_qido
    from dicomcloud.index.schema import study
    from dicomcloud.index.sql_index import SqlIndex
    from dicomcloud.services.query import SEARCH_KEYS

    params = parse_qsl(urlsplit(query.target()).query)
    parsed = parse_qido(QueryLevel.STUDY, params, known=SEARCH_KEYS[QueryLevel.STUDY])
    index = SqlIndex.__new__(SqlIndex)  # only to compile: no engine, no connection
    index._dialect = dialect_name
    collate = sa_collate(study.c.study_instance_uid, dialect_name)
    order = (study.c.study_date.is_(None), study.c.study_date.desc(), collate)
    statement = index._search_statement(TENANT, parsed, order)
    dialect = asyncpg.dialect() if dialect_name == "postgresql" else sqlite.dialect()
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    # SQLite writes an offset without a limit as "LIMIT ? OFFSET n" with ? bound to -1
    return sql.replace("LIMIT ? OFFSET", "LIMIT -1 OFFSET")


def sa_collate(column: object, dialect_name: str) -> object:
    """``SqlIndex._code_points``: the study order's last key as the index writes it."""
    import sqlalchemy as sa

    return sa.collate(column, "C") if dialect_name == "postgresql" else column  # type: ignore[arg-type]


def explain_sqlite(path: Path, sql: str) -> str:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
        t0 = time.perf_counter()
        conn.execute(sql).fetchall()
        ms = (time.perf_counter() - t0) * 1000
    plan = "\n".join(f"{'  ' * (1 if parent else 0)}{detail}" for _, parent, _, detail in rows)
    return f"{plan}\n-- statement alone: {ms:.1f} ms"


async def _explain_pg(url: str, sql: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql)
    finally:
        await conn.close()
    return "\n".join(r[0] for r in rows)


def explain(report: LoadReport, query: QidoQuery) -> str:
    sql = _statement_sql(query, report.backend)
    if report.backend == "postgresql":
        return asyncio.run(_explain_pg(report.url, sql))
    return explain_sqlite(Path(report.url.removeprefix("sqlite:///")), sql)


# -- report ---------------------------------------------------------------------------


def _met(run: ScaleRun, row: ScaleRow) -> str:
    if row.errors:
        return "**no** (errors)"
    if not row.study_list:
        return "n/a"
    return "yes" if row.p95_ms < TARGET_MS[run.backend] else "**no**"


def render(runs: Sequence[ScaleRun], command: str, note: str = "") -> str:
    parts = [
        "# Search at scale: dicomcloud QIDO-RS on a 1,000,000-instance index\n",
        f"Generated by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M:%S UTC}. "
        "Do not edit by hand. The index was bulk-loaded by `bench/loader.py` (synthetic, "
        "seeded) and served by `dicomcloud serve`; each query warmed up 3 times, then "
        "timed on one keep-alive HTTP connection. Targets: every study-list query p95 "
        "< 50 ms on PostgreSQL, < 150 ms on SQLite. See docs/performance.md "
        '"Search at scale" for the plans.\n',
    ]
    if note:
        parts.append(f"**Index state:** {note}\n")
    for run in runs:
        rows = ", ".join(f"{n:,} {t}" for t, n in run.rows.items())
        parts.append(f"## {run.backend}\n")
        parts.append(
            f"{rows}; loaded in {run.load_seconds:.0f} s, {run.size_mb:,.0f} MB; "
            f"{run.repeat} timed runs per query; study lists with `limit={run.limit}`.\n"
        )
        head = [
            "query",
            "results",
            "HTTP p50 ms",
            "HTTP p95 ms",
            "QueryService p50 ms",
            f"target p95 < {TARGET_MS[run.backend]:.0f} ms",
            "met?",
        ]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in run.results:
            target = "study list" if r.study_list else "(not a study list)"
            lines.append(
                f"| {r.title} | {r.count} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | "
                f"{'-' if r.service_p50_ms is None else f'{r.service_p50_ms:.1f}'} | {target} | "
                f"{_met(run, r)} |"
            )
        parts.append("\n".join(lines) + "\n")
        errors = run.errors + [f"{r.key}: {e}" for r in run.results for e in r.errors]
        if errors:
            parts.append(
                "Errors:\n" + "\n".join("- " + e.replace("\n", " ⏎ ")[:300] for e in errors) + "\n"
            )
    return "\n".join(parts)


def _ensure_loaded(backend: str, load: bool, spec: ScaleSpec) -> LoadReport:
    report = None if load else load_saved(backend)
    if (
        report is not None
        and backend == "sqlite"
        and not Path(report.url.removeprefix("sqlite:///")).exists()
    ):
        report = None  # the database file was cleaned up: load again
    if report is None:
        print(f"loading {spec.instances:,} instances into {backend} ...", flush=True)
        if backend == "sqlite":
            report = load_sqlite(default_sqlite_path(spec), spec)
        else:
            report = load_postgresql(spec, PG_DATABASE)
        save_report(report)
        print(f"  loaded in {report.seconds:.0f} s ({report.size_mb:,.0f} MB)", flush=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    p.add_argument("--backend", choices=("postgresql", "sqlite", "both"), default="both")
    p.add_argument("--load", action="store_true", help="(re)load the index first")
    p.add_argument("--instances", type=int, default=ScaleSpec.instances)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--limit", type=int, default=100, help="limit on every study list")
    p.add_argument("--explain", action="store_true", help="print the study-level plans")
    p.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS-scale.md")
    p.add_argument("--no-output", action="store_true", help="print only")
    p.add_argument("--note", default="", help="a line about the index state, for the report")
    p.add_argument(
        "--no-service", action="store_true", help="skip the in-process QueryService timing"
    )
    args = p.parse_args(argv)
    spec = ScaleSpec(instances=args.instances)
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    runs: list[ScaleRun] = []
    for backend in backends:
        report = _ensure_loaded(backend, args.load, spec)
        run = measure(report, args.repeat, args.limit)
        if not args.no_service:
            service = time_service(report, max(5, args.repeat // 2), args.limit)
            for r in run.results:
                r.service_p50_ms = round(service.get(r.key, 0.0), 2)
        if args.explain:
            values = search_values(report, args.limit)
            for query in build_queries(values):
                if query.study_list:
                    run.plans[query.key] = explain(report, query)
        runs.append(run)
        for r in run.results:
            print(
                f"{backend:10} {r.key:18} n={r.count:<5} p50 {r.p50_ms:7.1f} ms  "
                f"p95 {r.p95_ms:7.1f} ms  service p50 {r.service_p50_ms or 0:7.1f} ms  "
                f"{_met(run, r)}",
                flush=True,
            )
        for key, plan in run.plans.items():
            print(f"\n--- {backend} {key}\n{plan}")
        for e in run.errors:
            print(f"{backend} error: {e[:500]}")
    command = "python -m bench.scale " + " ".join(
        argv if argv is not None else __import__("sys").argv[1:]
    )
    if not args.no_output:
        args.output.write_text(render(runs, command.strip(), args.note))
        (SCALE_DIR / "results.json").write_text(json.dumps([asdict(r) for r in runs], indent=1))
        out = args.output
        print(f"\nreport: {out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
