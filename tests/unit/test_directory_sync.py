"""Directory fsyncs shared by concurrent writers (storage/filesystem.py DirectorySync).

Every caller must return only after an fsync of the directory that STARTED after its
call (its rename happened before the call); callers waiting meanwhile share one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from dicomcloud.storage import filesystem
from dicomcloud.storage.filesystem import DirectorySync, FilesystemBlobStore


class RecordingFsync:
    """Records when each directory fsync starts and ends; the first one lasts until
    the test releases it."""

    def __init__(self, fail_first: bool = False) -> None:
        self.calls: list[tuple[float, float]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()
        self.fail_first = fail_first
        self._lock = threading.Lock()

    def __call__(self, directory: Path) -> None:
        start = time.monotonic()
        with self._lock:
            first = not self.calls and not self.first_started.is_set()
        if first:
            self.first_started.set()
            assert self.release.wait(10)
            if self.fail_first:
                with self._lock:
                    self.calls.append((start, time.monotonic()))
                raise OSError(5, "Input/output error")
        with self._lock:
            self.calls.append((start, time.monotonic()))


def wait_until_requested(sync: DirectorySync, directory: Path, count: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with sync._changed:
            state = sync._dirs.get(directory)
            if state is not None and state.requested >= count:
                return
        time.sleep(0.005)
    raise AssertionError(f"fewer than {count} writers arrived")


def test_writers_waiting_on_a_running_fsync_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = RecordingFsync()
    monkeypatch.setattr(filesystem, "_fsync_dir", fsync)
    sync = DirectorySync()
    returned: dict[str, tuple[float, float]] = {}

    def writer(name: str) -> None:
        called = time.monotonic()
        sync.sync(tmp_path)
        returned[name] = (called, time.monotonic())

    first = threading.Thread(target=writer, args=("first",))
    first.start()
    assert fsync.first_started.wait(5)
    others = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(5)]
    for thread in others:
        thread.start()
    wait_until_requested(sync, tmp_path, 6)
    fsync.release.set()
    for thread in [first, *others]:
        thread.join(10)

    assert len(returned) == 6
    assert len(fsync.calls) == 2  # the slow one, then one for the five that came later
    assert sync.fsyncs == 2
    for name, (called, came_back) in returned.items():
        # each caller was covered by an fsync that started after it called
        assert any(called <= start and end <= came_back for start, end in fsync.calls), name


def test_a_failed_fsync_fails_its_caller_and_the_waiters_sync_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = RecordingFsync(fail_first=True)
    monkeypatch.setattr(filesystem, "_fsync_dir", fsync)
    sync = DirectorySync()
    errors: list[str] = []
    done: list[str] = []

    def writer(name: str) -> None:
        try:
            sync.sync(tmp_path)
        except OSError as exc:
            errors.append(f"{name}: {exc}")
        else:
            done.append(name)

    first = threading.Thread(target=writer, args=("first",))
    first.start()
    assert fsync.first_started.wait(5)
    later = threading.Thread(target=writer, args=("later",))
    later.start()
    wait_until_requested(sync, tmp_path, 2)
    fsync.release.set()
    first.join(10)
    later.join(10)

    assert errors == ["first: [Errno 5] Input/output error"]
    assert done == ["later"]
    assert len(fsync.calls) == 2


async def test_concurrent_puts_into_one_series_all_land(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    keys = [f"default/1.2/1.2.3/1.2.3.{i}.dcm" for i in range(64)]

    sizes = await asyncio.gather(*(store.put(k, [k.encode()]) for k in keys))

    assert sizes == [len(k) for k in keys]
    for key in keys:
        assert await store.get(key) == key.encode()
    assert 1 <= store._dir_sync.fsyncs <= len(keys)
