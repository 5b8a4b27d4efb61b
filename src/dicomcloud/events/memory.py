"""In-process event bus: the embedded default and the reference implementation.

Consumer groups behave as on Redis and Kafka within one process: each group holds the
messages published since it was first consumed, each message goes to one consumer of
the group, and a consumer stopped while handling a message gives it back (first in
line) for the next one.  Nothing survives the process: events relayed from the outbox
to ``memory://`` but not yet handled are gone after a crash (the metadata they would
have prepared is built on the next read).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dicomcloud.events.delivery import handle
from dicomcloud.ports import Delivery, Handler, RetryPolicy


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: str
    payload: str


class _GroupLog:
    """The messages a group has not acknowledged yet, in order, bounded."""

    def __init__(self, limit: int) -> None:
        self.items: deque[Delivery] = deque()
        self.in_flight = 0
        self._limit = limit
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    async def put(self, delivery: Delivery) -> None:
        while len(self.items) >= self._limit:
            self._writable.clear()
            await self._writable.wait()
        self.items.append(delivery)
        self._readable.set()

    def give_back(self, delivery: Delivery) -> None:
        self.items.appendleft(dataclasses.replace(delivery, attempt=delivery.attempt + 1))
        self._readable.set()

    async def take(self) -> Delivery:
        while not self.items:
            self._readable.clear()
            await self._readable.wait()
        delivery = self.items.popleft()
        if len(self.items) < self._limit:
            self._writable.set()
        return delivery


class MemorySubscription:
    """``concurrency`` tasks taking messages of one group."""

    def __init__(self, tasks: list[asyncio.Task[None]]) -> None:
        self._tasks = tasks

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []


class MemoryEventBus:
    """Consumer groups on in-process queues; ``subscribe`` taps a topic (tests)."""

    def __init__(self, max_queue: int = 10_000) -> None:
        self._groups: dict[str, dict[str, _GroupLog]] = defaultdict(dict)
        self._taps: dict[str, list[asyncio.Queue[Message]]] = defaultdict(list)
        self._max_queue = max_queue
        self._ids = itertools.count(1)
        self.published = 0

    def subscribe(self, topic: str) -> asyncio.Queue[Message]:
        """Every message published on ``topic`` from now on (no acknowledgement)."""
        queue: asyncio.Queue[Message] = asyncio.Queue(self._max_queue)
        self._taps[topic].append(queue)
        return queue

    def backlog(self, topic: str, group: str) -> int:
        """Messages of ``group`` waiting or being handled."""
        log = self._groups.get(topic, {}).get(group)
        return 0 if log is None else len(log.items) + log.in_flight

    async def publish(
        self, topic: str, key: str, payload: str, headers: Mapping[str, str] | None = None
    ) -> None:
        delivery = Delivery(topic, key, payload, str(next(self._ids)), 1, dict(headers or {}))
        for log in self._groups.get(topic, {}).values():
            await log.put(delivery)
        message = Message(topic, key, payload)
        for queue in self._taps.get(topic, []):
            await queue.put(message)
        self.published += 1

    async def publish_many(self, messages: Sequence[tuple[str, str, str]]) -> None:
        for topic, key, payload in messages:
            await self.publish(topic, key, payload)

    async def consume(
        self,
        topic: str,
        group: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = 1,
    ) -> MemorySubscription:
        log = self._groups[topic].get(group)
        if log is None:
            log = self._groups[topic][group] = _GroupLog(self._max_queue)
        policy = retry or RetryPolicy()
        tasks = [
            asyncio.create_task(
                self._run(log, group, handler, policy), name=f"consumer-{group}-{topic}-{i}"
            )
            for i in range(max(1, concurrency))
        ]
        return MemorySubscription(tasks)

    async def _run(self, log: _GroupLog, group: str, handler: Handler, retry: RetryPolicy) -> None:
        while True:
            delivery = await log.take()
            log.in_flight += 1
            try:
                await handle(delivery, group, handler, retry, self.publish)
            except BaseException:
                log.give_back(delivery)  # stopped before the acknowledgement
                raise
            finally:
                log.in_flight -= 1

    async def close(self) -> None:
        self._groups.clear()
        self._taps.clear()
