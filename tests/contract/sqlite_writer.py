"""A child process of the multi-process SQLite test: stores single-instance batches."""

from __future__ import annotations

import asyncio
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

from dicomcloud.index import SqlIndex

from .records import sop_uid, write


def store_singles(url: str, series: str, count: int, start: Event, report: Queue[str]) -> None:
    """Store ``count`` instances of ``series``, one transaction each, once ``start`` is
    set; put ``"ok"`` or the first error on ``report``."""

    async def run() -> None:
        index = SqlIndex.from_url(url)
        try:
            await index.ping()
            start.wait()
            for n in range(count):
                await index.store_instances([write(sop_uid(n, series), series=series)])
        finally:
            await index.close()

    try:
        asyncio.run(run())
    except Exception as exc:  # reported to the parent, which fails the test
        report.put(f"{series}: {exc!r}")
    else:
        report.put("ok")
