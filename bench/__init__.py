"""Reproducible ingest benchmark of dicomcloud against Orthanc.

Run from the repository root with ``python -m bench`` (see ``bench/README.md``).
"""

from __future__ import annotations

from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
