"""Redis Streams event bus (``redis://host:port/db?stream_prefix=dicomcloud:``).

One stream per topic (``{stream_prefix}{topic}``), one consumer group per ``group``
(XGROUP CREATE from the stream's start, so a new group reads every retained event).
A consumer reads with XREADGROUP and acknowledges with XACK only once its handler
returned, and keeps what it works on claimed meanwhile; a message another consumer left
pending for ``claim_idle_seconds`` (it crashed, or was stopped mid-message) is taken
over with XAUTOCLAIM.  Dead letters go
to ``{stream_prefix}{topic}.dlq`` in one MULTI/EXEC with the XACK of the original.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from dicomcloud.errors import ConfigurationError
from dicomcloud.events.delivery import STOP_SECONDS, Acknowledgements, handle, stop_consumer
from dicomcloud.ports import Delivery, Handler, RetryPolicy

log = logging.getLogger(__name__)

#: Query parameters of the bus URL that are ours, not redis-py's.
OWN_PARAMETERS = ("stream_prefix", "claim_idle_seconds", "maxlen", "block_seconds")
#: Messages one XREADGROUP takes at most (handled, and acknowledged, one by one).
READ_BATCH = 32


async def _done(value: Any) -> Any:
    """redis-py types its commands for both clients; the asyncio one returns awaitables."""
    return await cast(Awaitable[Any], value)


def consumer_name() -> str:
    """A consumer name unique to this process and subscription (XREADGROUP)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisSubscription:
    """One consumer of a group: a reader task that handles what it reads."""

    def __init__(self, task: asyncio.Task[None], acks: Acknowledgements) -> None:
        self._task = task
        self._acks = acks

    async def stop(self) -> None:
        await stop_consumer(self._task.get_name(), self._task, self._acks)


class RedisStreamsEventBus:
    """Events on Redis Streams with consumer groups (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        stream_prefix: str = "dicomcloud:",
        claim_idle_seconds: float = 60.0,
        maxlen: int | None = None,
        block_seconds: float = 1.0,
    ) -> None:
        self._client = client
        self.stream_prefix = stream_prefix
        self._claim_idle_ms = max(1, int(claim_idle_seconds * 1000))
        self._maxlen = maxlen
        self._block_ms = max(1, int(block_seconds * 1000))
        self._acks = Acknowledgements()

    @classmethod
    def from_url(cls, url: str) -> RedisStreamsEventBus:
        parts = urlparse(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        own = {k: v for k, v in query if k in OWN_PARAMETERS}
        rest = urlencode([(k, v) for k, v in query if k not in OWN_PARAMETERS])
        try:
            options: dict[str, Any] = {
                "stream_prefix": own.get("stream_prefix", "dicomcloud:"),
                "claim_idle_seconds": float(own.get("claim_idle_seconds", 60)),
                "maxlen": int(own["maxlen"]) if own.get("maxlen") else None,
                "block_seconds": float(own.get("block_seconds", 1)),
            }
            client = aioredis.Redis.from_url(
                urlunparse(parts._replace(query=rest)), decode_responses=True
            )
        except ValueError as exc:
            raise ConfigurationError(f"events.url: {exc}") from exc
        return cls(client, **options)

    def stream(self, topic: str) -> str:
        return self.stream_prefix + topic

    async def publish(
        self, topic: str, key: str, payload: str, headers: Mapping[str, str] | None = None
    ) -> None:
        await _done(
            self._client.xadd(
                self.stream(topic), _fields(key, payload, headers), maxlen=self._maxlen
            )
        )

    async def publish_many(self, messages: Sequence[tuple[str, str, str]]) -> None:
        """All XADDs in one pipeline: one round trip for the batch."""
        async with self._client.pipeline(transaction=False) as pipe:
            for topic, key, payload in messages:
                pipe.xadd(self.stream(topic), _fields(key, payload, None), maxlen=self._maxlen)
            await pipe.execute()

    async def consume(
        self,
        topic: str,
        group: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = 1,
    ) -> RedisSubscription:
        await self._ensure_group(topic, group)
        task = asyncio.create_task(
            self._run(topic, group, handler, retry or RetryPolicy(), max(1, concurrency)),
            name=f"consumer-{group}-{topic}",
        )
        return RedisSubscription(task, self._acks)

    async def _ensure_group(self, topic: str, group: str) -> None:
        try:
            await _done(self._client.xgroup_create(self.stream(topic), group, "0", mkstream=True))
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _run(
        self, topic: str, group: str, handler: Handler, retry: RetryPolicy, concurrency: int
    ) -> None:
        stream = self.stream(topic)
        consumer = consumer_name()
        claim_every = min(self._claim_idle_ms / 2000, 5.0)
        next_claim = 0.0
        backoff = 0.5
        slots = asyncio.Semaphore(concurrency)

        async def limited(delivery: Delivery, mine: set[str]) -> None:
            async with slots:
                await self._handle(stream, group, delivery, handler, retry)
                mine.discard(delivery.id)

        while True:
            try:
                entries: list[tuple[str, dict[str, str] | None]] = []
                attempts: dict[str, int] = {}
                if time.monotonic() >= next_claim:
                    entries = await self._claim(stream, group, consumer, concurrency)
                    attempts = await self._deliveries(stream, group, [i for i, _ in entries])
                    next_claim = time.monotonic() + claim_every if not entries else 0.0
                if not entries:
                    answer = await _done(
                        self._client.xreadgroup(
                            group,
                            consumer,
                            {stream: ">"},
                            count=max(READ_BATCH, concurrency),
                            block=self._block_ms,
                        )
                    )
                    for _name, read in answer or []:
                        entries.extend(read)
                deliveries = []
                for entry_id, fields in entries:
                    if not fields:  # trimmed away while pending: nothing to handle
                        await _done(self._client.xack(stream, group, entry_id))
                        continue
                    deliveries.append(_delivery(topic, entry_id, fields, attempts.get(entry_id, 1)))
                if deliveries:
                    mine = {d.id for d in deliveries}
                    keeper = asyncio.create_task(self._keep_claimed(stream, group, consumer, mine))
                    try:
                        if concurrency == 1:  # in stream order: a key's messages stay in order
                            for delivery in deliveries:
                                await self._handle(stream, group, delivery, handler, retry)
                                mine.discard(delivery.id)
                        else:
                            await asyncio.gather(*(limited(d, mine) for d in deliveries))
                    finally:
                        keeper.cancel()
                backoff = 0.5
            except (RedisError, OSError) as exc:
                log.warning("consumer %s of %s: %s; retrying in %.1fs", group, stream, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                with contextlib.suppress(RedisError, OSError):
                    await self._ensure_group(topic, group)  # the stream may be new (FLUSH)

    async def _keep_claimed(self, stream: str, group: str, consumer: str, ids: set[str]) -> None:
        """While this consumer works on ``ids`` (slow handlers, retries, a batch
        waiting its turn), reset their idle time (XCLAIM JUSTID, which does not count
        a delivery) so that no other consumer takes them over; only a consumer that
        stopped or died loses its messages to the others."""
        while True:
            await asyncio.sleep(self._claim_idle_ms / 3000)
            if ids:
                with contextlib.suppress(RedisError, OSError):
                    await _done(
                        self._client.xclaim(stream, group, consumer, 0, list(ids), justid=True)
                    )

    async def _claim(
        self, stream: str, group: str, consumer: str, count: int
    ) -> list[tuple[str, dict[str, str] | None]]:
        answer = await _done(
            self._client.xautoclaim(stream, group, consumer, self._claim_idle_ms, "0-0", count)
        )
        claimed: list[tuple[str, dict[str, str] | None]] = list(answer[1])
        if claimed:
            log.info(
                "consumer %s of %s took over %d pending message(s)", group, stream, len(claimed)
            )
        return claimed

    async def _deliveries(self, stream: str, group: str, ids: list[str]) -> dict[str, int]:
        """How often each claimed message was delivered (XPENDING), this time included."""
        counts: dict[str, int] = {}
        for entry_id in ids:
            pending = await _done(self._client.xpending_range(stream, group, entry_id, entry_id, 1))
            if pending:
                counts[entry_id] = int(pending[0]["times_delivered"])
        return counts

    async def _handle(
        self, stream: str, group: str, delivery: Delivery, handler: Handler, retry: RetryPolicy
    ) -> None:
        async def dead_letter(
            topic: str, key: str, payload: str, headers: Mapping[str, str]
        ) -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(self.stream(topic), _fields(key, payload, headers), maxlen=self._maxlen)
                pipe.xack(stream, group, delivery.id)
                await pipe.execute()

        await handle(delivery, group, handler, retry, dead_letter)
        await self._acks.send(_done(self._client.xack(stream, group, delivery.id)))

    async def close(self) -> None:
        try:
            async with asyncio.timeout(STOP_SECONDS):
                await self._client.aclose()
        except TimeoutError:
            log.warning("the Redis connections did not close within %.0fs", STOP_SECONDS)


def _fields(key: str, payload: str, headers: Mapping[str, str] | None) -> dict[Any, Any]:
    fields: dict[Any, Any] = {"key": key, "payload": payload}
    if headers:
        fields["headers"] = json.dumps(dict(headers), separators=(",", ":"))
    return fields


def _delivery(topic: str, entry_id: str, fields: dict[str, str], attempt: int) -> Delivery:
    headers = json.loads(fields["headers"]) if "headers" in fields else {}
    return Delivery(
        topic, fields.get("key", ""), fields.get("payload", ""), entry_id, attempt, headers
    )
