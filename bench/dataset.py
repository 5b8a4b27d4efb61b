"""Deterministic synthetic CT dataset for the ingest benchmark.

Every UID is derived from the seed (``2.25.<128-bit hash>``), every date, name and
pixel value too, so two runs with the same seed produce byte-identical Part-10 files.
The files are written once into a cache directory together with ``manifest.json``;
later runs reuse them as long as the parameters in the manifest match.

Layout: instances are grouped into series, series into studies (two series per study),
studies into patients (two patients in three have two studies). Two sets are produced:

* ``small``: 64x64 16-bit MONOCHROME2 CT slices (about 9 KB per file)
* ``large``: 512x512 16-bit MONOCHROME2 CT slices (about 513 KB per file)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from bench import OUT_DIR

DEFAULT_SEED = 20240601
MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SetSpec:
    """One homogeneous set of instances (same matrix size)."""

    name: str
    count: int
    size: int  # rows == columns
    per_series: int
    series_per_study: int = 2


@dataclass(frozen=True)
class Instance:
    """One generated file, as listed in the manifest."""

    path: str  # relative to the dataset directory
    study_uid: str
    series_uid: str
    sop_uid: str
    nbytes: int


@dataclass
class DataSet:
    """A loaded dataset: its directory and the instances of each set."""

    root: Path
    seed: int
    quick: bool
    sets: dict[str, list[Instance]]

    def files(self, set_name: str) -> list[Path]:
        return [self.root / inst.path for inst in self.sets[set_name]]

    def total_bytes(self, set_name: str) -> int:
        return sum(inst.nbytes for inst in self.sets[set_name])


def specs(quick: bool) -> list[SetSpec]:
    """The sets of the full run, or about a tenth of them with ``quick``."""
    if quick:
        return [SetSpec("small", 300, 64, 50), SetSpec("large", 100, 512, 25)]
    return [SetSpec("small", 3000, 64, 50), SetSpec("large", 1000, 512, 100)]


def derive_uid(seed: int, *parts: object) -> str:
    """A fixed ``2.25.`` UID (at most 44 characters) derived from the seed and parts."""
    text = "|".join([str(seed), *(str(p) for p in parts)])
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")
    return f"2.25.{value}"


def _phantom(size: int) -> np.ndarray:
    """A CT-like phantom in stored values (intercept -1024): air, body, bone ring."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2.0
    r2 = ((x - c) / (0.42 * size)) ** 2 + ((y - c) / (0.32 * size)) ** 2
    img = np.full((size, size), 24.0, dtype=np.float32)  # air ~ -1000 HU
    img[r2 <= 1.0] = 1064.0  # soft tissue ~ 40 HU
    ring = (r2 <= 1.0) & (r2 >= 0.85)
    img[ring] = 2024.0  # bone ~ 1000 HU
    return img


def _pixels(base: np.ndarray, seed: int, set_index: int, index: int) -> bytes:
    rng = np.random.default_rng([seed, set_index, index])
    noise = rng.normal(0.0, 12.0, size=base.shape).astype(np.float32)
    arr = np.clip(base + noise + (index % 17) * 3.0, 0, 4095).astype("<u2")
    return arr.tobytes()


def _build(
    spec: SetSpec, set_index: int, seed: int, index: int, base: np.ndarray
) -> tuple[Dataset, str, str, str]:
    series_idx = index // spec.per_series
    in_series = index % spec.per_series
    study_idx = series_idx // spec.series_per_study
    patient_idx = study_idx * 2 // 3
    study_uid = derive_uid(seed, spec.name, "study", study_idx)
    series_uid = derive_uid(seed, spec.name, "series", series_idx)
    sop_uid = derive_uid(seed, spec.name, "instance", index)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    day = 1 + study_idx % 28
    ds.StudyDate = f"2023{1 + study_idx % 12:02d}{day:02d}"
    ds.SeriesDate = ds.StudyDate
    ds.ContentDate = ds.StudyDate
    ds.StudyTime = f"{8 + study_idx % 10:02d}{study_idx % 60:02d}00"
    ds.SeriesTime = ds.StudyTime
    ds.ContentTime = ds.StudyTime
    ds.AccessionNumber = f"BENCH{set_index}{study_idx:06d}"
    ds.Modality = "CT"
    ds.Manufacturer = "dicomcloud-bench"
    ds.InstitutionName = "Synthetic Hospital"
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.StudyDescription = f"CT {spec.name} study {study_idx}"
    ds.SeriesDescription = f"Axial {spec.size} series {series_idx}"
    ds.PatientName = f"Bench^{spec.name.capitalize()}{patient_idx:04d}"
    ds.PatientID = f"BENCH-{spec.name.upper()}-{patient_idx:04d}"
    ds.PatientBirthDate = f"19{50 + patient_idx % 50:02d}0{1 + patient_idx % 9}15"
    ds.PatientSex = "MF"[patient_idx % 2]
    ds.SliceThickness = "1.25"
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = str(study_idx + 1)
    ds.SeriesNumber = series_idx % spec.series_per_study + 1
    ds.InstanceNumber = in_series + 1
    z = f"{0.0 - 1.25 * in_series:.2f}"
    ds.ImagePositionPatient = ["-250.0", "-250.0", z]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = derive_uid(seed, spec.name, "for", study_idx)
    ds.SliceLocation = z
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.size
    ds.Columns = spec.size
    spacing = f"{500.0 / spec.size:.6g}"
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.PixelData = _pixels(base, seed, set_index, index)
    ds["PixelData"].VR = "OW"
    return ds, study_uid, series_uid, sop_uid


def _iter_specs(quick: bool) -> Iterator[tuple[int, SetSpec]]:
    yield from enumerate(specs(quick))


def dataset_dir(quick: bool) -> Path:
    return OUT_DIR / ("dataset-quick" if quick else "dataset")


def _params(seed: int, quick: bool) -> dict[str, object]:
    return {
        "format": FORMAT_VERSION,
        "seed": seed,
        "quick": quick,
        "specs": [asdict(s) for s in specs(quick)],
    }


def _load(root: Path, seed: int, quick: bool) -> DataSet | None:
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if data.get("params") != _params(seed, quick):
        return None
    sets = {name: [Instance(**row) for row in rows] for name, rows in data["sets"].items()}
    for rows in sets.values():
        # cheap sanity check: first and last file present with the recorded size
        for inst in (rows[0], rows[-1]):
            p = root / inst.path
            if not p.is_file() or p.stat().st_size != inst.nbytes:
                return None
    return DataSet(root=root, seed=seed, quick=quick, sets=sets)


def generate(root: Path, seed: int, quick: bool, log: bool = True) -> DataSet:
    """Write the dataset under ``root`` (replacing anything there) and its manifest."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    t0 = time.monotonic()
    sets: dict[str, list[Instance]] = {}
    for set_index, spec in _iter_specs(quick):
        base = _phantom(spec.size)
        rows: list[Instance] = []
        for index in range(spec.count):
            ds, study_uid, series_uid, sop_uid = _build(spec, set_index, seed, index, base)
            rel = f"{spec.name}/{index // spec.per_series:03d}/{index:05d}.dcm"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            rows.append(Instance(rel, study_uid, series_uid, sop_uid, path.stat().st_size))
        sets[spec.name] = rows
        if log:
            mb = sum(r.nbytes for r in rows) / 1e6
            print(f"  generated {spec.name}: {len(rows)} files, {mb:.1f} MB")
    manifest = {
        "params": _params(seed, quick),
        "sets": {name: [asdict(r) for r in rows] for name, rows in sets.items()},
    }
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    if log:
        print(f"  dataset written to {root} in {time.monotonic() - t0:.1f} s")
    return DataSet(root=root, seed=seed, quick=quick, sets=sets)


def ensure(seed: int = DEFAULT_SEED, quick: bool = False, force: bool = False) -> DataSet:
    """Load the cached dataset, generating it first if missing or stale."""
    root = dataset_dir(quick)
    if not force:
        loaded = _load(root, seed, quick)
        if loaded is not None:
            return loaded
    print(f"Generating {'quick ' if quick else ''}dataset (seed {seed}) ...")
    return generate(root, seed, quick)


def digest(ds: DataSet) -> str:
    """SHA-256 over all files in manifest order (to prove two runs are identical)."""
    h = hashlib.sha256()
    for name in sorted(ds.sets):
        for path in ds.files(name):
            h.update(path.read_bytes())
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate the benchmark dataset")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--force", action="store_true", help="regenerate even if cached")
    parser.add_argument("--digest", action="store_true", help="print a SHA-256 of all files")
    args = parser.parse_args()
    ds = ensure(args.seed, args.quick, args.force)
    for name, rows in ds.sets.items():
        print(f"{name}: {len(rows)} instances, {ds.total_bytes(name) / 1e6:.1f} MB")
    if args.digest:
        print(digest(ds))


if __name__ == "__main__":
    main()
