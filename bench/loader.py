"""Bulk loader of a large synthetic index (1,000,000 instances by default) for the
search-at-scale benchmark (``python -m bench.scale``).

The rows go straight into the index tables of ``dicomcloud.index.schema`` (no DICOM
files, no blobs: study-list queries read the index only).  The schema is created by the
project's own migrations (``dicomcloud.index.migrate``), and rows carry only the columns
that ``schema`` declares, so the loader keeps working when later migrations add nullable
columns.  PostgreSQL is loaded with ``COPY`` (asyncpg ``copy_records_to_table``),
SQLite with SQLAlchemy Core ``executemany`` in large transactions.

Everything derives from a seed (``random.Random``): names (some non-ASCII, some with
ideographic and phonetic component groups, PS3.5 6.2.1), study dates spread over 2005 to
2025 with more recent studies, a mix of modalities with modality-typical series and
instance counts, accession numbers, patients with one to many studies.  The values the
benchmark queries use (an existing PatientID, a name prefix, a date range covering about
10% of the studies...) are picked from the generated data and written next to it
(``values.json``).

Usage::

    python -m bench.loader --backend sqlite   # bench/out/scale/index-1m.sqlite3
    python -m bench.loader --backend postgresql --instances 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import OUT_DIR
from dicomcloud.index import schema
from dicomcloud.index.migrate import migrate

SCALE_DIR = OUT_DIR / "scale"
TENANT = "default"
DEFAULT_SEED = 20240601
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DATABASE = "dicomcloud_bench_1m"

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"

FAMILY_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Garcia",
    "Rodriguez", "Wilson", "Martinez", "Anderson", "Taylor", "Thomas", "Moore", "Martin",
    "Jackson", "Thompson", "White", "Lopez", "Lee", "Gonzalez", "Harris", "Clark",
    "Lewis", "Robinson", "Walker", "Perez", "Hall", "Young", "Allen", "Sanchez", "Wright",
    "King", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill", "Campbell", "Mitchell",
    "Roberts", "Carter", "Phillips", "Evans", "Turner", "Torres", "Parker", "Collins",
    "Müller", "Schröder", "Weiß", "Öztürk", "Søndergaard", "Ødegaard", "Łukasiewicz",
    "Novák", "Dvořák", "García Márquez", "Gonçalves", "Nguyễn", "Ivanova", "Papadopoulos",
    "O'Brien", "Kowalski", "Rossi", "Dubois", "Johansson", "Schmidt", "Fischer", "Weber",
    "Meyer", "Wagner", "Becker", "Hoffmann", "Schulz", "Koch", "Richter", "Klein",
)  # fmt: skip
GIVEN_NAMES = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda",
    "William", "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
    "Thomas", "Sarah", "Charles", "Karen", "Anna", "Lukas", "Zoë", "Chloé", "José",
    "François", "Jürgen", "Åsa", "Björn", "Renée", "Míla", "Sören", "Ana", "Mateo",
    "Emma", "Noah", "Olivia", "Liam", "Sophia", "Mia",
)  # fmt: skip
#: names with ideographic and phonetic component groups (PS3.5 6.2.1.2 examples' style)
CJK_NAMES = (
    "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "Tanaka^Hanako=田中^花子=たなか^はなこ",
    "Suzuki^Ichiro=鈴木^一郎=すずき^いちろう",
    "Hong^Gildong=洪^吉洞=홍^길동",
    "Kim^Minjun=金^旻俊=김^민준",
)
PHYSICIANS = ("Referrer^Rita", "House^Gregory", "Grey^Meredith", "Quinn^Michaela", "")

#: modality -> (share of studies, series per study range, raw instances per series,
#: SOP Class UID, rows/columns, study description, body part)
MODALITIES: dict[str, tuple[float, tuple[int, int], tuple[int, int], str, int, str, str]] = {
    "CT": (0.28, (2, 6), (60, 400), "1.2.840.10008.5.1.4.1.1.2", 512, "CT CHEST", "CHEST"),
    "MR": (0.22, (4, 10), (20, 120), "1.2.840.10008.5.1.4.1.1.4", 256, "MR BRAIN", "HEAD"),
    "CR": (0.15, (1, 3), (1, 1), "1.2.840.10008.5.1.4.1.1.1", 2048, "CR THORAX", "CHEST"),
    "DX": (0.10, (1, 2), (1, 2), "1.2.840.10008.5.1.4.1.1.1.1", 2500, "DX KNEE", "KNEE"),
    "US": (0.08, (1, 3), (5, 40), "1.2.840.10008.5.1.4.1.1.6.1", 600, "US ABDOMEN", "ABDOMEN"),
    "MG": (0.07, (4, 4), (1, 1), "1.2.840.10008.5.1.4.1.1.1.2", 3328, "MG SCREENING", "BREAST"),
    "PT": (0.04, (2, 4), (100, 300), "1.2.840.10008.5.1.4.1.1.128", 200, "PET-CT WB", "WB"),
    "NM": (0.03, (1, 3), (1, 60), "1.2.840.10008.5.1.4.1.1.20", 128, "NM BONE", "WB"),
    "XA": (0.03, (2, 5), (10, 80), "1.2.840.10008.5.1.4.1.1.12.1", 1024, "XA CORONARY", "HEART"),
}
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.22"
FIRST_DATE = date(2005, 1, 1)
LAST_DATE = date(2025, 12, 31)


@dataclass(frozen=True)
class ScaleSpec:
    """How big the synthetic index is."""

    patients: int = 20_000
    studies: int = 50_000
    instances: int = 1_000_000
    seed: int = DEFAULT_SEED


@dataclass
class QueryValues:
    """Values from the generated data for the benchmark's queries."""

    patient_id: str = ""
    patient_id_studies: int = 0
    name_prefix: str = ""
    date_low: str = ""
    date_high: str = ""
    date_range_studies: int = 0
    accession_number: str = ""
    study_uid: str = ""
    study_series: int = 0
    series_uid: str = ""
    series_instances: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def _uid(rng: random.Random) -> str:
    return f"2.25.{rng.getrandbits(127)}"


def _study_date(rng: random.Random) -> str | None:
    if rng.random() < 0.005:  # a few studies without a date (they sort last)
        return None
    span = (LAST_DATE - FIRST_DATE).days
    day = FIRST_DATE + timedelta(days=int(span * rng.random() ** 0.7))  # more recent ones
    return day.strftime("%Y%m%d")


def _person_name(rng: random.Random) -> str:
    if rng.random() < 0.01:
        return rng.choice(CJK_NAMES)
    family, given = rng.choice(FAMILY_NAMES), rng.choice(GIVEN_NAMES)
    if rng.random() < 0.2:
        return f"{family}^{given}^{rng.choice('ABCDEFGHJKLMNPRSTW')}"
    return f"{family}^{given}"


@dataclass
class Generated:
    """The rows of one batch, column name -> value per row."""

    patients: list[dict[str, Any]] = field(default_factory=list)
    studies: list[dict[str, Any]] = field(default_factory=list)
    series: list[dict[str, Any]] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)


def _patients(spec: ScaleSpec, rng: random.Random, now: datetime) -> list[dict[str, Any]]:
    rows = []
    for i in range(spec.patients):
        born = date(1925, 1, 1) + timedelta(days=rng.randrange(0, 365 * 97))
        rows.append(
            {
                "tenant_id": TENANT,
                "patient_id": f"MRN{i * 7 + 1000003:08d}",
                "issuer_of_patient_id": None,
                "patient_name": _person_name(rng),
                "patient_birth_date": born.strftime("%Y%m%d"),
                "patient_birth_time": None,
                "patient_sex": rng.choice("MMFFFO") if rng.random() < 0.99 else None,
                "created_at": now,
                "updated_at": now,
            }
        )
    return rows


def _modality(rng: random.Random) -> str:
    names = list(MODALITIES)
    return rng.choices(names, weights=[MODALITIES[m][0] for m in names])[0]


def _studies_and_series(
    spec: ScaleSpec, rng: random.Random, patients: Sequence[dict[str, Any]], now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[str, float]]]:
    """Study and series rows, and per series (its primary modality, raw instance weight)."""
    studies: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    weights: list[tuple[str, float]] = []
    for k in range(spec.studies):
        # every patient has a study; the rest go to a skewed few (follow-up patients)
        p = k if k < spec.patients else int(spec.patients * rng.random() ** 3)
        modality = _modality(rng)
        _, (lo, hi), (ilo, ihi), _, _, description, body = MODALITIES[modality]
        study_uid = _uid(rng)
        when = _study_date(rng)
        time_of_day = f"{rng.randrange(7, 20):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
        studies.append(
            {
                "tenant_id": TENANT,
                "study_instance_uid": study_uid,
                "patient_id": patients[p]["patient_id"],
                "study_date": when,
                "study_time": time_of_day,
                "accession_number": None
                if rng.random() < 0.01
                else f"ACC{(k * 7919 + 104729) % 10**9:09d}",
                "study_id": str(k % 100_000 + 1),
                "study_description": description,
                "referring_physician_name": rng.choice(PHYSICIANS) or None,
                "patient_age": None,
                "patient_size": None,
                "patient_weight": round(rng.uniform(40, 120), 1) if rng.random() < 0.5 else None,
                "created_at": now,
                "updated_at": now,
            }
        )
        n_series = rng.randint(lo, hi)
        for s in range(n_series):
            series_modality = modality
            if modality == "PT" and s == 0:
                series_modality = "CT"  # PET-CT: the attenuation-correction CT
            elif modality in ("CT", "MR") and s == n_series - 1 and rng.random() < 0.2:
                series_modality = "SR"  # a dose or structured report
            series.append(
                {
                    "tenant_id": TENANT,
                    "series_instance_uid": _uid(rng),
                    "study_instance_uid": study_uid,
                    "modality": series_modality,
                    "series_number": s + 1,
                    "series_date": when,
                    "series_time": time_of_day,
                    "series_description": f"{description} {s + 1}",
                    "body_part_examined": body,
                    "protocol_name": f"{modality} protocol {rng.randrange(1, 20)}",
                    "performed_procedure_step_start_date": when,
                    "performed_procedure_step_start_time": time_of_day,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            raw = 1.0 if series_modality == "SR" else float(rng.randint(ilo, ihi))
            weights.append((series_modality, raw))
    return studies, series, weights


def _instance_counts(weights: Sequence[tuple[str, float]], total: int) -> list[int]:
    """Instances per series, proportional to the raw weights, summing to ``total``."""
    raw_total = sum(w for _, w in weights)
    counts = [max(1, round(w * total / raw_total)) for _, w in weights]
    diff = total - sum(counts)
    order = sorted(range(len(counts)), key=lambda i: -counts[i])
    i = 0
    while diff != 0:
        j = order[i % len(order)]
        step = 1 if diff > 0 else -1
        if counts[j] + step >= 1:
            counts[j] += step
            diff -= step
        i += 1
    return counts


def _instances(
    series_row: dict[str, Any], count: int, rng: random.Random, now: datetime
) -> Iterator[dict[str, Any]]:
    modality = series_row["modality"]
    if modality == "SR":
        sop_class, size = SR_CLASS, 0
    else:
        sop_class, size = MODALITIES[modality][3], MODALITIES[modality][4]
    study_uid, series_uid = series_row["study_instance_uid"], series_row["series_instance_uid"]
    for n in range(count):
        sop_uid = _uid(rng)
        yield {
            "tenant_id": TENANT,
            "sop_instance_uid": sop_uid,
            "study_instance_uid": study_uid,
            "series_instance_uid": series_uid,
            "sop_class_uid": sop_class,
            "transfer_syntax_uid": EXPLICIT_VR_LE,
            "blob_key": f"{TENANT}/{study_uid}/{series_uid}/{sop_uid}",
            "size": size * size * 2 + 2048 if size else 4096,
            "instance_number": n + 1,
            "content_date": series_row["series_date"],
            "content_time": series_row["series_time"],
            "number_of_frames": None,
            "rows": size or None,
            "columns": size or None,
            "bits_allocated": 16 if size else None,
            "bits_stored": 12 if size else None,
            "high_bit": 11 if size else None,
            "pixel_representation": 0 if size else None,
            "samples_per_pixel": 1 if size else None,
            "photometric_interpretation": "MONOCHROME2" if size else None,
            "image_type": "ORIGINAL\\PRIMARY\\AXIAL" if size else None,
            "image_orientation_patient": "1\\0\\0\\0\\1\\0" if size else None,
            "image_position_patient": f"-250\\-250\\{-1.25 * n:.2f}" if size else None,
            "slice_thickness": 1.25 if size else None,
            "spacing_between_slices": None,
            "slice_location": -1.25 * n if size else None,
            "rescale_intercept": -1024.0 if modality == "CT" else None,
            "rescale_slope": 1.0 if modality == "CT" else None,
            "rescale_type": "HU" if modality == "CT" else None,
            "window_center": "40" if modality == "CT" else None,
            "window_width": "400" if modality == "CT" else None,
            "created_at": now,
            "updated_at": now,
        }


def generate(spec: ScaleSpec, batch_series: int = 5_000) -> tuple[Iterator[Generated], QueryValues]:
    """The rows in batches (patients, studies and series in the first batch, instances
    in every batch) and the query values picked from them."""
    rng = random.Random(spec.seed)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    patients = _patients(spec, rng, now)
    studies, series, weights = _studies_and_series(spec, rng, patients, now)
    counts = _instance_counts(weights, spec.instances)
    values = _pick_values(rng, patients, studies, series, counts)

    def batches() -> Iterator[Generated]:
        first = Generated(patients=patients, studies=studies, series=series)
        yield first
        for start in range(0, len(series), batch_series):
            batch = Generated()
            for row, count in zip(
                series[start : start + batch_series],
                counts[start : start + batch_series],
                strict=True,
            ):
                batch.instances.extend(_instances(row, count, rng, now))
            yield batch

    return batches(), values


def _pick_values(
    rng: random.Random,
    patients: Sequence[dict[str, Any]],
    studies: Sequence[dict[str, Any]],
    series: Sequence[dict[str, Any]],
    counts: Sequence[int],
) -> QueryValues:
    values = QueryValues()
    per_patient: dict[str, int] = {}
    for s in studies:
        per_patient[s["patient_id"]] = per_patient.get(s["patient_id"], 0) + 1
    multi = sorted(pid for pid, n in per_patient.items() if n >= 2)
    values.patient_id = rng.choice(multi) if multi else studies[0]["patient_id"]
    values.patient_id_studies = per_patient[values.patient_id]
    # a name prefix: the first three letters of a common family name
    values.name_prefix = "Sch*"
    dates = sorted(s["study_date"] for s in studies if s["study_date"])
    low, high = dates[len(dates) * 45 // 100], dates[len(dates) * 55 // 100]
    values.date_low, values.date_high = low, high
    values.date_range_studies = sum(1 for d in dates if low <= d <= high)
    with_accession = [s for s in studies if s["accession_number"]]
    values.accession_number = rng.choice(with_accession)["accession_number"]
    study_series: dict[str, list[int]] = {}
    for i, row in enumerate(series):
        study_series.setdefault(row["study_instance_uid"], []).append(i)
    study_uid = rng.choice([u for u, idx in study_series.items() if len(idx) >= 3])
    values.study_uid = study_uid
    values.study_series = len(study_series[study_uid])
    biggest = max(study_series[study_uid], key=lambda i: counts[i])
    values.series_uid = series[biggest]["series_instance_uid"]
    values.series_instances = counts[biggest]
    values.counts = {
        "patients": len(patients),
        "studies": len(studies),
        "series": len(series),
        "instances": sum(counts),
    }
    return values


def _columns(table: sa.Table, row: dict[str, Any]) -> list[str]:
    """The columns of ``row`` that ``table`` has (all of them, or the loader is stale)."""
    missing = [c for c in row if c not in table.c]
    if missing:
        raise RuntimeError(f"{table.name} has no columns {missing}: the loader is out of date")
    return list(row)


def _table_batches(batch: Generated) -> list[tuple[sa.Table, list[dict[str, Any]]]]:
    return [
        (schema.patient, batch.patients),
        (schema.study, batch.studies),
        (schema.series, batch.series),
        (schema.instance, batch.instances),
    ]


@dataclass
class LoadReport:
    backend: str
    url: str
    seconds: float
    rows: dict[str, int]
    values: QueryValues
    size_mb: float = 0.0


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def load_sqlite(path: Path, spec: ScaleSpec, analyze: bool = False) -> LoadReport:
    """A fresh SQLite index at ``path`` holding the synthetic rows."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    asyncio.run(migrate(sqlite_url(path)))
    batches, values = generate(spec)
    engine = sa.create_engine(sqlite_url(path))
    rows: dict[str, int] = {}
    with engine.connect() as conn:
        # a bulk load: durability is pointless here, a crash means loading again
        conn.exec_driver_sql("PRAGMA journal_mode=OFF")
        conn.exec_driver_sql("PRAGMA synchronous=OFF")
        conn.exec_driver_sql("PRAGMA cache_size=-1000000")
        for batch in batches:
            for table, data in _table_batches(batch):
                if not data:
                    continue
                cols = _columns(table, data[0])
                stmt = sa.insert(table).values({c: sa.bindparam(c) for c in cols})
                conn.execute(stmt, data)
                rows[table.name] = rows.get(table.name, 0) + len(data)
            conn.commit()
        if analyze:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    engine.dispose()
    # serve reopens the file in WAL mode (engine.configure_sqlite)
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA journal_mode=WAL")
    return LoadReport(
        "sqlite",
        sqlite_url(path),
        time.monotonic() - t0,
        rows,
        values,
        path.stat().st_size / 1e6,
    )


def pg_url(database: str = PG_DATABASE) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{database}"


async def _recreate_pg_database(database: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


async def _load_pg(database: str, spec: ScaleSpec) -> LoadReport:
    import asyncpg

    t0 = time.monotonic()
    await _recreate_pg_database(database)
    await migrate(pg_url(database))
    batches, values = generate(spec)
    rows: dict[str, int] = {}
    conn = await asyncpg.connect(pg_url(database))
    try:
        for batch in batches:
            for table, data in _table_batches(batch):
                if not data:
                    continue
                cols = _columns(table, data[0])
                records = [tuple(r[c] for c in cols) for r in data]
                await conn.copy_records_to_table(table.name, records=records, columns=cols)
                rows[table.name] = rows.get(table.name, 0) + len(data)
        await conn.execute("ANALYZE")  # what autovacuum does shortly after a bulk load
        size = await conn.fetchval("SELECT pg_database_size($1)", database)
    finally:
        await conn.close()
    return LoadReport(
        "postgresql", pg_url(database), time.monotonic() - t0, rows, values, size / 1e6
    )


def load_postgresql(spec: ScaleSpec, database: str = PG_DATABASE) -> LoadReport:
    """A fresh PostgreSQL database ``database`` holding the synthetic rows."""
    return asyncio.run(_load_pg(database, spec))


def values_path(backend: str) -> Path:
    return SCALE_DIR / f"values-{backend}.json"


def save_report(report: LoadReport) -> None:
    SCALE_DIR.mkdir(parents=True, exist_ok=True)
    doc = asdict(report)
    values_path(report.backend).write_text(json.dumps(doc, indent=1))


def load_saved(backend: str) -> LoadReport | None:
    path = values_path(backend)
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    doc["values"] = QueryValues(**doc["values"])
    return LoadReport(**doc)


def default_sqlite_path(spec: ScaleSpec) -> Path:
    return SCALE_DIR / f"index-{spec.instances // 1000}k.sqlite3"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loader", description=__doc__)
    p.add_argument("--backend", choices=("sqlite", "postgresql"), required=True)
    p.add_argument("--instances", type=int, default=ScaleSpec.instances)
    p.add_argument("--studies", type=int, default=ScaleSpec.studies)
    p.add_argument("--patients", type=int, default=ScaleSpec.patients)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--database", default=PG_DATABASE, help="PostgreSQL database name")
    p.add_argument("--sqlite-path", type=Path, help="SQLite file (default under bench/out)")
    args = p.parse_args(argv)
    spec = ScaleSpec(args.patients, args.studies, args.instances, args.seed)
    if args.backend == "sqlite":
        report = load_sqlite(args.sqlite_path or default_sqlite_path(spec), spec)
    else:
        report = load_postgresql(spec, args.database)
    save_report(report)
    print(
        f"{report.backend}: {report.rows} in {report.seconds:.1f} s, "
        f"{report.size_mb:.0f} MB, {report.url}"
    )
    print(json.dumps(asdict(report.values), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
