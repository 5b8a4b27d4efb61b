"""Event consumers run by ``dicomcloud worker`` (and by ``dicomcloud serve`` in
process): the series metadata builder and users' own consumers (docs/events.md).

A user consumer is named ``package.module:attribute`` in ``[workers] consumers`` or
with ``dicomcloud worker --consumer``; the attribute is a :class:`Consumer`, or an
async function taking a :class:`~dicomcloud.ports.Delivery` (then its consumer group
is the spec itself and it consumes ``instance.stored``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from dicomcloud.domain.events import INSTANCE_STORED
from dicomcloud.errors import ConfigurationError
from dicomcloud.ports import EventBus, Handler, RetryPolicy, Subscription

log = logging.getLogger(__name__)

__all__ = ["Consumer", "Workers", "load_consumer"]


@dataclass(frozen=True, slots=True)
class Consumer:
    """A consumer group and its handler: returning acknowledges a message, raising
    retries it (``[workers] max_attempts``), then dead-letters it to ``<topic>.dlq``.
    Delivery is at least once: the handler must tolerate a message seen twice."""

    group: str
    handle: Handler
    topic: str = INSTANCE_STORED
    #: Messages handled at once by this process (above 1, one study's events may be
    #: handled out of order on memory:// and redis://; kafka:// keeps partitions ordered).
    concurrency: int = 1


def load_consumer(spec: str) -> Consumer:
    """The consumer ``package.module:attribute`` names; ``ConfigurationError`` if it
    cannot be imported or is neither a Consumer nor an async function."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        target = getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"consumer {spec!r} cannot be loaded: {exc}") from exc
    if isinstance(target, Consumer):
        return target
    if inspect.iscoroutinefunction(target):
        return Consumer(group=spec, handle=target)
    raise ConfigurationError(
        f"consumer {spec!r} is neither a dicomcloud.workers.Consumer nor an async function"
    )


class Workers:
    """Subscribes consumers to the bus; keeps retrying one the bus refuses (a broker
    that is down at start-up), so that a late broker only delays the work."""

    def __init__(self, bus: EventBus, consumers: Sequence[Consumer], retry: RetryPolicy) -> None:
        self._bus = bus
        self._consumers = list(consumers)
        self._retry = retry
        self._subscriptions: list[Subscription] = []
        self._pending: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for consumer in self._consumers:
            try:
                await self._subscribe(consumer)
            except Exception as exc:
                log.warning("consumer %s cannot start yet: %s", consumer.group, exc)
                self._pending.append(
                    asyncio.create_task(self._keep_trying(consumer), name=f"start-{consumer.group}")
                )

    async def _subscribe(self, consumer: Consumer) -> None:
        subscription = await self._bus.consume(
            consumer.topic,
            consumer.group,
            consumer.handle,
            retry=self._retry,
            concurrency=consumer.concurrency,
        )
        self._subscriptions.append(subscription)
        log.info("consumer %s started on %s", consumer.group, consumer.topic)

    async def _keep_trying(self, consumer: Consumer) -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                await self._subscribe(consumer)
                return
            except Exception as exc:
                delay = min(delay * 2, 30.0)
                log.warning("consumer %s cannot start yet: %s", consumer.group, exc)

    async def stop(self) -> None:
        for task in self._pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pending = []
        for subscription in reversed(self._subscriptions):
            await subscription.stop()
        self._subscriptions = []
