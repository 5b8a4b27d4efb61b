"""Rendering of the search scenarios (bench/search.py) for bench/RESULTS.md and stdout.

The search sections sit between two HTML comments in RESULTS.md, so a run of only the
search scenarios replaces them and keeps the ingest sections, and an ingest-only run
keeps the search sections of the previous run (``merge_results``).
"""

from __future__ import annotations

from typing import Any

from bench.qido import QueryTiming
from bench.search import CFIND_TARGET_RATIO, QIDO_TARGET_RATIO, SearchRun

BEGIN = "<!-- search:begin -->"
END = "<!-- search:end -->"
BASE = "orthanc"
CANDIDATE = "dicomcloud"


def _split(text: str) -> tuple[str, str | None]:
    """``text`` without its search block, and the block (None if absent)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return text, None
    return text[:start].rstrip() + "\n" + text[end + len(END) :].lstrip("\n"), text[
        start : end + len(END)
    ]


def merge_results(old: str | None, ingest: str | None, search: str | None) -> str:
    """The new RESULTS.md: this run's ingest part (or the old one) followed by this run's
    search block (or the old one)."""
    old_ingest, old_search = _split(old) if old else (None, None)
    body = ingest if ingest is not None else (old_ingest or "")
    block = f"{BEGIN}\n{search.rstrip()}\n{END}" if search is not None else old_search
    if block is None:
        return body
    return body.rstrip() + "\n\n" + block + "\n"


def _ms(t: QueryTiming | None, which: str) -> str:
    if t is None:
        return "not run"
    if not t.ok:
        return "FAILED"
    return f"{t.p50_ms() if which == 'p50' else t.p95_ms():.1f}"


def _ratio(base: QueryTiming | None, cand: QueryTiming | None) -> float | None:
    if base is None or cand is None or not (base.ok and cand.ok) or base.p50_ms() <= 0:
        return None
    return cand.p50_ms() / base.p50_ms()


def _counts(base: QueryTiming | None, cand: QueryTiming | None) -> str:
    b = "-" if base is None or base.count < 0 else str(base.count)
    c = "-" if cand is None or cand.count < 0 else str(cand.count)
    flag = "" if b == c else " **differ**"
    return f"{b} / {c}{flag}"


def _met(
    ratio: float | None, need: float, base: QueryTiming | None, cand: QueryTiming | None
) -> str:
    if cand is None:
        return "not run"
    if not cand.ok:
        return "**no** (failed)"
    if base is not None and base.ok and base.count != cand.count:
        return "**no** (counts differ)"
    if ratio is None:
        return "n/a"
    return "yes" if ratio <= need else "**no**"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


QIDO_HEAD = [
    "query",
    "results (Orthanc / dc)",
    "Orthanc p50 ms",
    "Orthanc p95 ms",
    "dicomcloud p50 ms",
    "dicomcloud p95 ms",
    "ratio p50 (dc/Orthanc)",
    "met? (<= 0.5x)",
]
CFIND_HEAD = [
    "query",
    "results (Orthanc / dc)",
    "1 assoc: Orthanc p50 ms",
    "1 assoc: dc p50 ms",
    "ratio",
    "assoc/query: Orthanc p50 ms",
    "assoc/query: dc p50 ms",
    "ratio",
    "met? (<= 1x)",
]


def qido_rows(run: SearchRun) -> list[list[str]]:
    base, cand = run.peers.get(BASE), run.peers.get(CANDIDATE)
    rows = []
    for key, title in run.titles.items():
        b = base.qido.get(key) if base else None
        c = cand.qido.get(key) if cand else None
        ratio = _ratio(b, c)
        rows.append(
            [
                title,
                _counts(b, c),
                _ms(b, "p50"),
                _ms(b, "p95"),
                _ms(c, "p50"),
                _ms(c, "p95"),
                "n/a" if ratio is None else f"{ratio:.2f}x",
                _met(ratio, QIDO_TARGET_RATIO, b, c),
            ]
        )
    return rows


def cfind_rows(run: SearchRun) -> list[list[str]]:
    base, cand = run.peers.get(BASE), run.peers.get(CANDIDATE)
    rows = []
    for key, title in run.find_titles.items():
        b1 = base.cfind_one.get(key) if base else None
        c1 = cand.cfind_one.get(key) if cand else None
        bn = base.cfind_per.get(key) if base else None
        cn = cand.cfind_per.get(key) if cand else None
        if not any((b1, c1, bn, cn)):
            continue
        r1, rn = _ratio(b1, c1), _ratio(bn, cn)
        met1, metn = _met(r1, CFIND_TARGET_RATIO, b1, c1), _met(rn, CFIND_TARGET_RATIO, bn, cn)
        rows.append(
            [
                title,
                _counts(b1, c1),
                _ms(b1, "p50"),
                _ms(c1, "p50"),
                "n/a" if r1 is None else f"{r1:.2f}x",
                _ms(bn, "p50"),
                _ms(cn, "p50"),
                "n/a" if rn is None else f"{rn:.2f}x",
                met1 if met1 == metn else f"{met1} / {metn}",
            ]
        )
    return rows


def render_search(run: SearchRun, meta: dict[str, Any]) -> str:
    v = run.values
    parts = [
        "## Search: QIDO-RS and C-FIND latency\n",
        f"Generated by `{meta['command']}` on {meta['date']}. Both peers freshly started and "
        f"loaded with the `{run.set_name}` set ({run.expected} instances, STOW-RS 50 per "
        f"request); each query warmed up, then timed {run.repeat} times back to back on one "
        "keep-alive connection (`http.client`, `Accept: application/dicom+json`); latency = "
        "request sent to body read. The first peer alternates from query to query. "
        "Ratio = dicomcloud p50 / Orthanc p50. Results = number of matches each peer "
        "returned (they must agree).\n",
        f"Query values (from the loaded files): PatientID `{v.patient_id}`, PatientName "
        f"`{v.name_pattern}`, StudyDate `{v.date_low}-{v.date_high}`, ModalitiesInStudy "
        f"`{v.modality}`, AccessionNumber `{v.accession_number}`, study `{v.study_uid}`, "
        f"series `{v.series_uid}`. The OHIF list uses offset {v.page_offset}: offset 50 "
        "would be past the end of this set's studies.\n",
    ]
    parts.append("### QIDO-RS (target: dicomcloud p50 <= 0.5x Orthanc's)\n")
    parts.append(_table(QIDO_HEAD, qido_rows(run)) + "\n")
    rows = cfind_rows(run)
    if rows:
        parts.append("### C-FIND, Study Root, STUDY level (target: dicomcloud p50 <= Orthanc's)\n")
        parts.append(
            "pynetdicom SCU with TCP_NODELAY on its socket; `1 assoc` = all queries on one "
            "association, `assoc/query` = associate + C-FIND + release timed together "
            "(half as many repeats). Orthanc runs with `TCP_NODELAY=1` and "
            "`DicomAlwaysAllowFind`.\n"
        )
        parts.append(_table(CFIND_HEAD, rows) + "\n")
    issues = []
    for name, res in run.peers.items():
        for err in res.errors[:5]:
            issues.append(f"- {name}: " + err.replace("\n", " ⏎ ")[:400])
        for group in (res.qido, res.cfind_one, res.cfind_per):
            for key, t in group.items():
                for err in t.errors[:2]:
                    issues.append(f"- {name} `{key}`: {err[:300]}")
                if t.odd_counts:
                    issues.append(
                        f"- {name} `{key}` (C-FIND): the pynetdicom SCU saw another result "
                        f"count than {t.count} in {t.odd_counts} run(s) (a missed pending "
                        "response, see bench/cfind.py)"
                    )
        for line in res.log_errors[:5]:
            issues.append(f"- {name} log: `{line.replace('`', chr(39))[:300]}`")
    load = ", ".join(
        f"{n} loaded {r.loaded}/{run.expected} in {r.load_s:.1f} s" for n, r in run.peers.items()
    )
    parts.append(f"Loading: {load}.\n")
    parts.append("Search errors: " + ("\n" + "\n".join(issues) if issues else "none.") + "\n")
    return "\n".join(parts)


def print_search_summary(run: SearchRun) -> None:
    print("\nQIDO-RS (ratio = dicomcloud p50 / Orthanc p50)")
    print(_table(QIDO_HEAD, qido_rows(run)))
    rows = cfind_rows(run)
    if rows:
        print("\nC-FIND")
        print(_table(CFIND_HEAD, rows))
