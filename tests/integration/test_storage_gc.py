"""Storage garbage collection (``services.storage_gc``, ``dicomcloud storage gc``) on a
real archive: the orphan of a deletion whose file removals failed and the orphan of an
interrupted store are found and removed; referenced files, metadata of live series
and orphans younger than the grace period are kept; a dry run removes nothing.  On
the filesystem with every SQL index backend, and on S3 (SeaweedFS)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

import backends
from conftest import ArchiveFactory, LocalArchive
from dicomcloud.index.sql_index import SqlIndex
from dicomcloud.ports import BlobStore
from dicomcloud.services.storage_gc import GcSummary, Kind, StorageCollector
from dicomcloud.storage.keys import instance_key
from integration.support import Instance, new_dataset, part10
from integration.test_cli import run
from seaweedfs import SeaweedS3

pytestmark = pytest.mark.timeout(180)

HOUR = 3600.0


def _instance(study: str, series: str) -> Instance:
    ds = new_dataset(study=study, series=series)
    return Instance(study, series, str(ds.SOPInstanceUID), str(ds.SOPClassUID), part10(ds))


async def _stored(local: LocalArchive, *instances: Instance) -> None:
    response = await local.stow([i.data for i in instances])
    assert response.status_code == 200, response.text


async def _keys(store: BlobStore) -> set[str]:
    return {found.key async for found in store.list_objects()}


class Scene:
    """What each test stores: a kept study (with its metadata built), the file left
    by a deletion whose removals failed, the file of an interrupted store."""

    def __init__(self) -> None:
        study, series = generate_uid(), generate_uid()
        self.kept = [_instance(study, series), _instance(study, series)]
        self.deleted = _instance(generate_uid(), generate_uid())
        self.interrupted = _instance(generate_uid(), generate_uid())
        self.kept_keys: set[str] = set()
        self.deleted_key = ""
        self.interrupted_key = instance_key(
            "default", self.interrupted.study, self.interrupted.series, self.interrupted.sop
        )

    async def build(self, local: LocalArchive, monkeypatch: pytest.MonkeyPatch) -> None:
        archive = local.archive
        await _stored(local, *self.kept, self.deleted)
        study, series = self.kept[0].study, self.kept[0].series
        metadata = await local.retrieve(f"/studies/{study}/series/{series}/metadata")
        assert metadata.status_code == 200
        self.kept_keys = {r.blob_key for r in await archive.index.list_instances("default", study)}
        (record,) = await archive.index.list_instances("default", self.deleted.study)
        self.deleted_key = record.blob_key

        async def refused(key: str) -> None:
            raise OSError(f"simulated failure removing {key}")

        # A deletion whose file removals all fail: the index forgets the instance,
        # the file stays (logged as an orphan).
        monkeypatch.setattr(archive.deletion, "retry_seconds", 0.01)
        with monkeypatch.context() as patched:
            patched.setattr(archive.blobs, "delete", refused)
            answer = await local.client.delete(f"/dicom-web/studies/{self.deleted.study}")
        assert answer.status_code == 204
        assert await archive.blobs.exists(self.deleted_key)
        # A store interrupted after writing its file, before its index transaction.
        await archive.blobs.put(self.interrupted_key, [self.interrupted.data])


def _collector(local: LocalArchive, **options: object) -> StorageCollector:
    index = local.archive.index
    return StorageCollector(
        index, local.archive.blobs, copies_in_index=isinstance(index, SqlIndex), **options
    )  # type: ignore[arg-type]


def _age_files(root: Path, seconds: float) -> None:
    then = time.time() - seconds
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))


def _orphan_keys(summary: GcSummary) -> set[str]:
    return {o.key for o in summary.orphans}


@pytest.fixture(params=backends.params(backends.SQL_BACKENDS))
async def on_backend(
    request: pytest.FixtureRequest, make_archive: ArchiveFactory, tmp_path: Path
) -> AsyncIterator[LocalArchive]:
    (tmp_path / "db").mkdir()
    async with backends.database_url(request.param, tmp_path / "db") as url:
        local = await make_archive(index__url=url)
        try:
            yield local
        finally:
            await local.close()  # before the database is dropped


async def test_gc_on_files(on_backend: LocalArchive, monkeypatch: pytest.MonkeyPatch) -> None:
    local, scene = on_backend, Scene()
    await scene.build(local, monkeypatch)
    _age_files(local.blobs_root, 2 * HOUR)
    _age_files(local.data_dir / "metadata", 2 * HOUR)
    fresh = _instance(generate_uid(), generate_uid())  # a store still in progress
    fresh_key = instance_key("default", fresh.study, fresh.series, fresh.sop)
    await local.archive.blobs.put(fresh_key, [fresh.data])
    before = await _keys(local.archive.blobs)
    assert {scene.deleted_key, scene.interrupted_key, fresh_key} | scene.kept_keys <= before

    dry = await _collector(local).collect(dry_run=True)
    assert _orphan_keys(dry) == {scene.deleted_key, scene.interrupted_key}
    assert {o.kind for o in dry.orphans} == {Kind.ORIGINAL}
    assert dry.found_bytes == len(scene.deleted.data) + len(scene.interrupted.data)
    assert dry.young == 1 and dry.removed == 0
    assert await _keys(local.archive.blobs) == before

    done = await _collector(local).collect()
    assert done.removed == 2 and not done.failed
    assert done.removed_bytes == dry.found_bytes
    assert await _keys(local.archive.blobs) == before - {scene.deleted_key, scene.interrupted_key}
    for instance in scene.kept:
        assert await local.retrieve_bytes(instance.path) == instance.data
    metadata = await _collector_metadata(local).collect()
    assert metadata.orphans == []  # the kept series' metadata is referenced by its series
    assert (await _collector(local).collect()).orphans == []

    # Past its grace period, the fresh orphan goes too.
    late = await _collector(local, older_than=0).collect()
    assert _orphan_keys(late) == {fresh_key} and late.removed == 1
    assert await _keys(local.archive.blobs) == scene.kept_keys


def _collector_metadata(local: LocalArchive, **options: object) -> StorageCollector:
    return StorageCollector(
        local.archive.index, local.archive.metadata.store, name="metadata", metadata=True,
        **options,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.backend
async def test_gc_on_s3(
    make_archive: ArchiveFactory, seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on S3: objects' ages come from the listing's LastModified (the
    collector's clock is moved two hours on instead of the objects back)."""
    prefix = f"gc-{uuid.uuid4().hex}"
    local = await make_archive(
        storage__url=seaweed.url(f"{prefix}/blobs"),
        metadata__url=seaweed.url(f"{prefix}/metadata"),
        storage__s3_access_key_id=seaweed.access_key_id,
        storage__s3_secret_access_key=seaweed.secret_access_key,
    )
    scene = Scene()
    await scene.build(local, monkeypatch)
    before = await _keys(local.archive.blobs)
    assert {scene.deleted_key, scene.interrupted_key} | scene.kept_keys == before

    young = await _collector(local).collect()  # everything was written just now
    assert young.orphans == [] and young.young == 2
    assert await _keys(local.archive.blobs) == before

    def later() -> float:
        return time.time() + 2 * HOUR

    dry = await _collector(local, clock=later).collect(dry_run=True)
    assert _orphan_keys(dry) == {scene.deleted_key, scene.interrupted_key}
    assert await _keys(local.archive.blobs) == before

    done = await _collector(local, clock=later).collect("default")
    assert done.removed == 2 and not done.failed
    assert await _keys(local.archive.blobs) == scene.kept_keys
    for instance in scene.kept:
        assert await local.retrieve_bytes(instance.path) == instance.data


def test_cli_storage_gc(tmp_path: Path) -> None:
    """``dicomcloud storage gc`` as an operator runs it on a data directory: the dry
    run lists the orphan, ``--yes`` removes it, the imported file stays."""
    files = tmp_path / "in"
    files.mkdir()
    kept = _instance(generate_uid(), generate_uid())
    (files / "kept.dcm").write_bytes(kept.data)
    data = tmp_path / "data"
    assert run("import", str(files), "--data-dir", str(data), cwd=tmp_path).returncode == 0
    orphan = _instance(generate_uid(), generate_uid())
    orphan_path = data / "blobs" / instance_key("default", orphan.study, orphan.series, orphan.sop)
    orphan_path.parent.mkdir(parents=True)
    orphan_path.write_bytes(orphan.data)
    _age_files(data / "blobs", 2 * HOUR)
    stored = {p for p in (data / "blobs").rglob("*.dcm")}
    assert len(stored) == 2

    dry = run("storage", "gc", "--dry-run", "--data-dir", str(data), cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert orphan.sop in dry.stdout and "dry run" in dry.stdout
    assert {p for p in (data / "blobs").rglob("*.dcm")} == stored

    done = run("storage", "gc", "--yes", "--data-dir", str(data), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not orphan_path.exists()
    assert {p for p in (data / "blobs").rglob("*.dcm")} == stored - {orphan_path}


def test_cli_storage_gc_refuses_with_an_empty_index(tmp_path: Path) -> None:
    """Files but no instance in the index: most likely the wrong configuration, so
    nothing is removed (a dry run still lists them)."""
    data = tmp_path / "data"
    lone = _instance(generate_uid(), generate_uid())
    path = data / "blobs" / instance_key("default", lone.study, lone.series, lone.sop)
    path.parent.mkdir(parents=True)
    path.write_bytes(lone.data)
    _age_files(data / "blobs", 2 * HOUR)

    dry = run("storage", "gc", "--dry-run", "--data-dir", str(data), cwd=tmp_path)
    refused = run("storage", "gc", "--yes", "--data-dir", str(data), cwd=tmp_path)

    assert dry.returncode == 0 and lone.sop in dry.stdout
    assert refused.returncode == 1
    assert "holds no instance at all" in refused.stderr
    assert path.read_bytes() == lone.data
