"""The search scenarios: QIDO-RS and C-FIND latency on the small set (~3,000 instances).

Both peers are started fresh, loaded with the ``small`` set over STOW-RS (50 instances
per request, the ingest bench's client), checked to hold every instance, then queried:
each query against one peer and then the other (the first peer alternates from one query
to the next), so drift of the shared machine hits both alike.  Query values come from
the loaded files (``pick_values``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread

from bench import dataset
from bench.cfind import build_find_queries, time_association_per_query, time_one_association
from bench.peers import OrthancPeer, Peer, PeerError
from bench.qido import QueryTiming, SearchValues, build_queries, time_query
from bench.stow import run_stow

#: QIDO target: dicomcloud p50 at most half of Orthanc's; C-FIND: at most Orthanc's
QIDO_TARGET_RATIO = 0.5
CFIND_TARGET_RATIO = 1.0


class OrthancFindPeer(OrthancPeer):
    """Orthanc that answers C-FIND from any calling AE (it refuses unknown AEs by
    default, ``DicomAlwaysAllowFind``)."""

    def _prepare(self) -> None:
        super()._prepare()
        assert self.workdir is not None
        path = self.workdir / "orthanc.json"
        config = json.loads(path.read_text())
        config["DicomAlwaysAllowFind"] = True
        path.write_text(json.dumps(config, indent=2))


@dataclass(frozen=True)
class StudyFacts:
    study_uid: str
    series_uids: tuple[str, ...]
    patient_id: str
    patient_name: str
    study_date: str
    accession_number: str


def _facts(data: dataset.DataSet, set_name: str) -> list[StudyFacts]:
    """One header per study (the first file of its first series), and its series."""
    first_file: dict[str, Path] = {}
    series: dict[str, list[str]] = {}
    for inst in data.sets[set_name]:
        first_file.setdefault(inst.study_uid, data.root / inst.path)
        uids = series.setdefault(inst.study_uid, [])
        if inst.series_uid not in uids:
            uids.append(inst.series_uid)
    out = []
    for study_uid, path in first_file.items():
        ds = dcmread(path, stop_before_pixels=True)
        out.append(
            StudyFacts(
                study_uid,
                tuple(series[study_uid]),
                str(ds.PatientID),
                str(ds.PatientName),
                str(ds.StudyDate),
                str(ds.AccessionNumber),
            )
        )
    return out


def pick_values(data: dataset.DataSet, set_name: str = "small") -> SearchValues:
    """Realistic query values that exist in ``set_name``: the PatientID with the most
    studies, a name prefix with ``*``, a StudyDate range over about 10% of the studies,
    an AccessionNumber, a study and one of its series, an offset giving a full page."""
    facts = _facts(data, set_name)
    per_patient: dict[str, int] = {}
    for f in facts:
        per_patient[f.patient_id] = per_patient.get(f.patient_id, 0) + 1
    patient_id = max(sorted(per_patient), key=lambda p: per_patient[p])
    name = facts[len(facts) // 2].patient_name
    dates = sorted(f.study_date for f in facts)
    width = max(1, len(dates) // 10)
    low = dates[len(dates) // 3]
    high = dates[min(len(dates) - 1, len(dates) // 3 + width - 1)]
    chosen = facts[len(facts) // 3]
    return SearchValues(
        patient_id=patient_id,
        name_pattern=name[:-1] + "*",
        date_low=low,
        date_high=high,
        modality="CT",
        accession_number=facts[len(facts) // 5].accession_number,
        study_uid=chosen.study_uid,
        series_uid=chosen.series_uids[0],
        page_offset=max(0, min(50, len(facts) - 25)),
    )


@dataclass
class PeerSearch:
    """What one peer did in the search scenarios."""

    peer: str
    started: bool = False
    startup_s: float = 0.0
    load_s: float = 0.0
    loaded: int | None = None
    qido: dict[str, QueryTiming] = field(default_factory=dict)
    cfind_one: dict[str, QueryTiming] = field(default_factory=dict)
    cfind_per: dict[str, QueryTiming] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)


@dataclass
class SearchRun:
    values: SearchValues
    titles: dict[str, str]
    find_titles: dict[str, str]
    peers: dict[str, PeerSearch]
    expected: int
    repeat: int
    set_name: str


def _load(peer: Peer, files: Sequence[Path], res: PeerSearch) -> bool:
    run = run_stow(peer.http_port, peer.stow_path, files, per_request=50, clients=1)
    res.load_s = run.seconds
    res.errors += run.errors[:3]
    res.loaded = peer.count_instances()
    if res.loaded != len(files):
        res.errors.append(f"holds {res.loaded} instances after loading {len(files)}")
        return False
    return True


def run_search(
    peer_classes: Sequence[type[Peer]],
    data: dataset.DataSet,
    *,
    qido: bool,
    cfind: bool,
    repeat: int,
    extra_args: dict[str, list[str]] | None = None,
    keep: bool = False,
    set_name: str = "small",
) -> SearchRun:
    """Start and load every peer, then time the QIDO-RS and C-FIND queries."""
    values = pick_values(data, set_name)
    queries = build_queries(values)
    finds = build_find_queries(values)
    files = data.files(set_name)
    results = {cls.name: PeerSearch(cls.name) for cls in peer_classes}
    running: dict[str, Peer] = {}
    try:
        for cls in peer_classes:
            peer_cls: type[Peer] = OrthancFindPeer if cls is OrthancPeer else cls
            peer = peer_cls(extra_args=(extra_args or {}).get(cls.name, []))
            res = results[cls.name]
            try:
                peer.start()
            except PeerError as exc:
                res.errors.append(f"start failed: {exc}")
                continue
            running[cls.name] = peer
            res.started = True
            res.startup_s = peer.startup_seconds
            if not _load(peer, files, res):
                continue
        ready = [n for n in results if n in running and not results[n].errors]
        for i, query in enumerate(queries if qido else []):
            for name in ready if i % 2 == 0 else list(reversed(ready)):
                results[name].qido[query.key] = time_query(running[name].http_port, query, repeat)
        if cfind:
            for name in ready:
                peer = running[name]
                results[name].cfind_one = {
                    t.key: t for t in time_one_association(peer.dicom_port, peer.aet, finds, repeat)
                }
            for name in reversed(ready):
                peer = running[name]
                results[name].cfind_per = {
                    t.key: t
                    for t in time_association_per_query(
                        peer.dicom_port, peer.aet, finds, max(5, repeat // 2)
                    )
                }
        for name, peer in running.items():
            if not peer.alive():
                results[name].errors.append(f"server died; log tail:\n{peer.log_tail()}")
    finally:
        for name, peer in running.items():
            results[name].log_errors = peer.log_errors()
            peer.stop(keep=keep)
    return SearchRun(
        values=values,
        titles={q.key: q.title for q in queries},
        find_titles={q.key: q.title for q in finds},
        peers=results,
        expected=len(files),
        repeat=repeat,
        set_name=set_name,
    )
