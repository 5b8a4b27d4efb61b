"""Group commit: concurrent index writes share one transaction (and one fsync).

While a transaction is being committed, new writes queue up; the next commit takes all
of them (up to ``max_batch``).  Under load the cost of a commit is shared by many
instances; with one sender it adds nothing.  A write whose series conflicts with
another study fails alone: the rest of its batch is retried one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from dicomcloud.domain.records import StoreOutcome
from dicomcloud.errors import DicomCloudError, IdentityConflict, IndexUnavailable
from dicomcloud.ports import Index, InstanceWrite

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    write: InstanceWrite
    future: asyncio.Future[StoreOutcome] = field(repr=False)


class GroupCommitter:
    """Collects concurrent index writes into shared transactions.

    While one transaction is being committed, new writes queue up; the next commit
    takes all of them (up to ``max_batch``).  Under load this makes the cost of a
    commit (and its fsync) shared by many instances; with one sender it adds nothing.
    """

    def __init__(self, index: Index, max_batch: int) -> None:
        self._index = index
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.committed = 0
        self.on_commit: list[Callable[[], None]] = []
        #: Awaited after a commit, before its writes are acknowledged (cache
        #: invalidation: a read that follows the acknowledgement sees the write).
        self.before_acknowledge: list[Callable[[Sequence[InstanceWrite]], Awaitable[None]]] = []

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(IndexUnavailable("the archive is shutting down"))

    async def submit(self, write: InstanceWrite) -> StoreOutcome:
        if self._task is None:
            raise IndexUnavailable("the index writer is not running")
        future: asyncio.Future[StoreOutcome] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(write, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            outcomes = await self._index.store_instances([p.write for p in batch])
        except IdentityConflict as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            # One bad instance must not fail the others: retry them one by one.
            for pending in batch:
                await self._commit([pending])
            return
        except DicomCloudError as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        except Exception as exc:  # never let the writer die; report and continue
            log.exception("index commit failed")
            error = IndexUnavailable(f"index commit failed: {exc}")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        self.commits += 1
        self.committed += len(batch)
        for hook in self.before_acknowledge:
            try:
                await hook([p.write for p in batch])
            except Exception:  # committed is committed: report, acknowledge anyway
                log.exception("after-commit hook failed")
        for pending, outcome in zip(batch, outcomes, strict=True):
            if not pending.future.done():
                pending.future.set_result(outcome)
        for callback in self.on_commit:
            callback()
