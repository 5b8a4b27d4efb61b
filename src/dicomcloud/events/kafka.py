"""Kafka event bus (``kafka://host:port[,host:port]?topic_prefix=dicomcloud.``).

One topic per event topic (``{topic_prefix}{topic}``, created with ``partitions``
partitions when missing), messages keyed by tenant and study so that the events of a
study land on one partition and stay in order.  Producers wait for ``acks=all``.
Consumers join the group ``group`` with auto-commit off: an offset is committed only
after the handler returned (or the message went to ``{topic_prefix}{topic}.dlq``), so
a consumer that stops or crashes mid-message leaves it to the partition's next owner.
Partitions are handled concurrently, the messages of one partition one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlparse

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from dicomcloud.errors import ConfigurationError
from dicomcloud.events.delivery import Acknowledgements, handle, stop_consumer
from dicomcloud.ports import Delivery, Handler, RetryPolicy

log = logging.getLogger(__name__)


class KafkaSubscription:
    """One group member: its consumer and the task handling what it fetches."""

    def __init__(
        self, consumer: AIOKafkaConsumer, task: asyncio.Task[None], acks: Acknowledgements
    ) -> None:
        self._consumer = consumer
        self._task = task
        self._acks = acks

    async def stop(self) -> None:
        await stop_consumer(self._task.get_name(), self._task, self._acks)
        with contextlib.suppress(KafkaError, OSError):
            await self._consumer.stop()  # leaves the group; nothing more is committed


class KafkaEventBus:
    """Events on Kafka topics (see the module docstring)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = "dicomcloud.",
        partitions: int = 6,
        replication_factor: int = 1,
        create_topics: bool = True,
        session_timeout_seconds: float = 10.0,
        request_timeout_seconds: float = 15.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic_prefix = topic_prefix
        self._partitions = partitions
        self._replication = replication_factor
        self._create_topics = create_topics
        self._session_ms = int(session_timeout_seconds * 1000)
        self._request_ms = int(request_timeout_seconds * 1000)
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._known_topics: set[str] = set()
        self._acks = Acknowledgements()

    @classmethod
    def from_url(cls, url: str) -> KafkaEventBus:
        parts = urlparse(url)
        if not parts.netloc:
            raise ConfigurationError("events.url: kafka:// needs host:port")
        query = dict(parse_qsl(parts.query))
        known = {
            "topic_prefix",
            "partitions",
            "replication_factor",
            "create_topics",
            "session_timeout_seconds",
        }
        unknown = set(query) - known
        if unknown:
            raise ConfigurationError(f"events.url: unknown kafka parameter(s) {sorted(unknown)}")
        try:
            options: dict[str, Any] = {
                "topic_prefix": query.get("topic_prefix", "dicomcloud."),
                "partitions": int(query.get("partitions", 6)),
                "replication_factor": int(query.get("replication_factor", 1)),
                "create_topics": query.get("create_topics", "true").lower() in ("true", "1"),
                "session_timeout_seconds": float(query.get("session_timeout_seconds", 10)),
            }
        except ValueError as exc:
            raise ConfigurationError(f"events.url: {exc}") from exc
        return cls(parts.netloc, **options)

    def topic(self, topic: str) -> str:
        return self.topic_prefix + topic

    async def _ensure_topic(self, name: str) -> None:
        if not self._create_topics or name in self._known_topics:
            return
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, request_timeout_ms=self._request_ms
        )
        await admin.start()
        try:
            if name not in await admin.list_topics():
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics([NewTopic(name, self._partitions, self._replication)])
        finally:
            await admin.close()
        self._known_topics.add(name)

    async def _started_producer(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is None:
                # Not idempotent: some Kafka-protocol brokers (Tansu) lack it; the
                # outbox and idempotent consumers make duplicates harmless anyway.
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    acks="all",
                    enable_idempotence=False,
                    request_timeout_ms=self._request_ms,
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def publish(
        self, topic: str, key: str, payload: str, headers: Mapping[str, str] | None = None
    ) -> None:
        name = self.topic(topic)
        await self._ensure_topic(name)
        producer = await self._started_producer()
        await producer.send_and_wait(
            name,
            payload.encode(),
            key=key.encode(),
            headers=[(k, v.encode()) for k, v in (headers or {}).items()] or None,
        )

    async def publish_many(self, messages: Sequence[tuple[str, str, str]]) -> None:
        """Hand every message to the producer, then wait for all acknowledgements
        (the producer batches them per partition)."""
        producer = await self._started_producer()
        for name in {self.topic(topic) for topic, _, _ in messages}:
            await self._ensure_topic(name)
        sent = [
            await producer.send(self.topic(topic), payload.encode(), key=key.encode())
            for topic, key, payload in messages
        ]
        await asyncio.gather(*sent)

    async def consume(
        self,
        topic: str,
        group: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = 1,
    ) -> KafkaSubscription:
        name = self.topic(topic)
        await self._ensure_topic(name)
        consumer = AIOKafkaConsumer(
            name,
            bootstrap_servers=self.bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._session_ms,
            heartbeat_interval_ms=max(100, self._session_ms // 10),
            rebalance_timeout_ms=self._session_ms,
            request_timeout_ms=max(self._request_ms, self._session_ms + 5000),
        )
        await consumer.start()
        task = asyncio.create_task(
            self._run(consumer, topic, group, handler, retry or RetryPolicy(), concurrency),
            name=f"consumer-{group}-{topic}",
        )
        return KafkaSubscription(consumer, task, self._acks)

    async def _run(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        group: str,
        handler: Handler,
        retry: RetryPolicy,
        concurrency: int,
    ) -> None:
        backoff = 0.5
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000, max_records=max(16, concurrency))
                await asyncio.gather(
                    *(
                        self._partition(consumer, topic, group, tp, records, handler, retry)
                        for tp, records in batches.items()
                    )
                )
                backoff = 0.5
            except KafkaError as exc:
                log.warning("consumer %s of %s: %s; retrying in %.1fs", group, topic, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _partition(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        group: str,
        tp: TopicPartition,
        records: list[ConsumerRecord[bytes, bytes]],
        handler: Handler,
        retry: RetryPolicy,
    ) -> None:
        for record in records:
            await handle(_delivery(topic, record), group, handler, retry, self.publish)
            try:
                await self._acks.send(consumer.commit({tp: record.offset + 1}))
            except KafkaError as exc:
                # Partition revoked (rebalance) or coordinator gone: the group's
                # committed offset stands; read on from it rather than skip ahead.
                log.warning("consumer %s: commit on %s failed: %s", group, tp, exc)
                with contextlib.suppress(KafkaError, AssertionError):
                    await consumer.seek_to_committed(tp)
                return

    async def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._producer.stop()
            self._producer = None


def _delivery(topic: str, record: ConsumerRecord[bytes, bytes]) -> Delivery:
    headers = {k: v.decode(errors="replace") for k, v in (record.headers or ())}
    return Delivery(
        topic,
        (record.key or b"").decode(errors="replace"),
        (record.value or b"").decode(errors="replace"),
        f"{record.partition}:{record.offset}",
        1,
        headers,
    )
