"""Filesystem blob store: temp file, fsync, rename, fsync the directory.

A crash at any point leaves either the old object or the new one under a key, never a
torn file; once ``put`` returns, the bytes and the directory entry are on stable
storage.  Concurrent writes into one directory (the instances of a series) share
directory fsyncs: one that starts after a rename makes that rename durable, so a writer
whose rename an fsync already in progress may have missed waits for the next one, which
then covers every writer waiting meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from dicomcloud.errors import NotFound, StorageUnavailable
from dicomcloud.ports import StoredObject
from dicomcloud.storage.keys import check_key

_TMP = ".tmp"
T = TypeVar("T")


class FilesystemBlobStore:
    """Objects as files under ``root``; temp files in ``root/.tmp`` (same filesystem)."""

    def __init__(self, root: str | Path, *, fsync: bool = True, io_threads: int = 32) -> None:
        self.root = Path(root).resolve()
        self._fsync = fsync
        self._tmp = self.root / _TMP
        # fsync waits on the device, not the CPU: many may be in flight at once (and
        # the filesystem journal commits concurrent ones together).
        self._io = ThreadPoolExecutor(io_threads, thread_name_prefix="blob-io")
        self._dir_sync = DirectorySync()

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, func, *args)

    def _path(self, key: str) -> Path:
        try:
            segments = check_key(key)
        except ValueError as exc:
            raise StorageUnavailable(str(exc)) from exc
        # check_key admits no separator and no "." / ".." segment, so the joined path
        # cannot leave the root (no resolve() here: it costs a syscall per segment).
        return self.root.joinpath(*segments)

    # -- writing ------------------------------------------------------------------------

    async def put(
        self, key: str, chunks: Iterable[bytes | memoryview], *, if_absent: bool = False
    ) -> int | None:
        path = self._path(key)
        return await self._run(self._put_sync, path, chunks, if_absent)

    def put_blocking(
        self, key: str, chunks: Iterable[bytes | memoryview], *, if_absent: bool = False
    ) -> int | None:
        """``put`` in the calling thread (a DIMSE association thread has no event loop)."""
        return self._put_sync(self._path(key), chunks, if_absent)

    def _put_sync(
        self, path: Path, chunks: Iterable[bytes | memoryview], if_absent: bool
    ) -> int | None:
        if if_absent and path.exists():
            return None
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            tmp = self._tmp / f"{uuid.uuid4().hex}.part"
            size = 0
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                with os.fdopen(fd, "wb", closefd=True) as out:
                    for chunk in chunks:
                        out.write(chunk)
                        size += len(chunk)
                    out.flush()
                    if self._fsync:
                        os.fsync(out.fileno())
                self._make_parents(path.parent)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            if self._fsync:
                self._dir_sync.sync(path.parent)
            return size
        except OSError as exc:
            raise StorageUnavailable(f"cannot write {path.name}: {exc.strerror or exc}") from exc

    def _make_parents(self, directory: Path) -> None:
        """Create missing directories and make each new entry durable in its parent."""
        missing: list[Path] = []
        current = directory
        while not current.exists():
            missing.append(current)
            current = current.parent
        for new_dir in reversed(missing):
            try:
                new_dir.mkdir()
            except FileExistsError:
                continue
            if self._fsync:
                _fsync_dir(new_dir.parent)

    def sweep_temporary(self) -> int:
        """Remove temp files left by writes that a crash interrupted; return how many.

        Only safe while no write is in progress: ``dicomcloud serve`` calls it once at
        start-up, before accepting anything.
        """
        removed = 0
        if self._tmp.is_dir():
            for leftover in self._tmp.iterdir():
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await self._run(path.unlink, True)

    # -- reading ------------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await self._run(path.read_bytes)
        except FileNotFoundError as exc:
            raise NotFound(f"object {key} not found") from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {key}: {exc.strerror or exc}") from exc

    async def stream(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle: BinaryIO = await self._run(_open_for_reading, path)
        except FileNotFoundError as exc:
            raise NotFound(f"object {key} not found") from exc
        try:
            while chunk := await self._run(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        path = self._path(key)
        try:
            return await self._run(_read_range, path, offset, length)
        except FileNotFoundError as exc:
            raise NotFound(f"object {key} not found") from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {key}: {exc.strerror or exc}") from exc

    async def size(self, key: str) -> int:
        try:
            return await self._run(self.size_of, key)
        except FileNotFoundError as exc:
            raise NotFound(f"object {key} not found") from exc

    async def exists(self, key: str) -> bool:
        return await self._run(self._path(key).is_file)

    async def ping(self) -> None:
        def check() -> None:
            self._tmp.mkdir(parents=True, exist_ok=True)
            probe = self._tmp / f"ping-{uuid.uuid4().hex}"
            probe.write_bytes(b"ok")
            probe.unlink()

        try:
            await self._run(check)
        except OSError as exc:
            raise StorageUnavailable(f"storage root {self.root} is not writable: {exc}") from exc

    async def list_objects(self, prefix: str = "") -> AsyncIterator[StoredObject]:
        """Every object under ``prefix`` (a key prefix), with its size and mtime; the
        directory tree is walked in a worker thread, one directory at a time."""
        folder, _, _ = prefix.rpartition("/")
        start = self._path(folder) if folder else self.root
        walk = iter(os.walk(start)) if start.is_dir() else iter(())
        while (step := await self._run(_next_listing, walk, self.root, prefix)) is not None:
            for found in step:
                yield found

    def iter_keys(self) -> Iterator[str]:
        """Every stored object's key (temp files excluded), in no particular order."""
        for directory, subdirs, names in os.walk(self.root):
            if Path(directory) == self.root:
                subdirs[:] = [d for d in subdirs if d != _TMP]
            relative = Path(directory).relative_to(self.root)
            for name in names:
                yield (relative / name).as_posix() if relative.parts else name

    def size_of(self, key: str) -> int:
        return self._path(key).stat().st_size


def _next_listing(
    walk: Iterator[tuple[str, list[str], list[str]]], root: Path, prefix: str
) -> list[StoredObject] | None:
    """The objects of the next directory of ``walk`` (None at its end)."""
    step = next(walk, None)
    if step is None:
        return None
    directory, subdirs, names = step
    here = Path(directory)
    if here == root:
        subdirs[:] = [d for d in subdirs if d != _TMP]
    relative = here.relative_to(root)
    found = []
    for name in names:
        key = (relative / name).as_posix() if relative.parts else name
        if not key.startswith(prefix):
            continue
        try:
            stat = (here / name).stat()
        except FileNotFoundError:  # removed meanwhile
            continue
        found.append(StoredObject(key, stat.st_size, stat.st_mtime))
    return found


def _open_for_reading(path: Path) -> BinaryIO:
    return path.open("rb")


def _read_range(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


class _Directory:
    __slots__ = ("done", "requested", "running", "users")

    def __init__(self) -> None:
        self.requested = 0  # renames recorded so far
        self.done = 0  # renames known durable (covered by a finished fsync)
        self.running = False
        self.users = 0


class DirectorySync:
    """fsync of directories, shared by the threads that renamed into the same one."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._dirs: dict[Path, _Directory] = {}
        self.fsyncs = 0  # how many were actually run (for tests and measurements)

    def sync(self, directory: Path) -> None:
        """Return once every entry renamed into ``directory`` before the call is on
        stable storage; raise ``OSError`` if this caller's own fsync failed."""
        with self._changed:
            state = self._dirs.get(directory)
            if state is None:
                state = self._dirs[directory] = _Directory()
            state.users += 1
            state.requested += 1
            mine = state.requested
        try:
            while True:
                with self._changed:
                    while state.running and state.done < mine:
                        self._changed.wait()
                    if state.done >= mine:
                        return
                    state.running = True
                    covers = state.requested  # every rename recorded before this fsync
                ok = False
                try:
                    _fsync_dir(directory)
                    ok = True
                finally:
                    with self._changed:
                        state.running = False
                        self.fsyncs += 1
                        if ok:
                            state.done = max(state.done, covers)
                        self._changed.notify_all()
        finally:
            with self._changed:
                state.users -= 1
                if state.users == 0:
                    del self._dirs[directory]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
