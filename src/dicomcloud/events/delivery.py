"""What every bus does with a delivered message: run the handler, retry it with
backoff, dead-letter it after the last attempt (docs/events.md "Delivery")."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from dicomcloud.ports import Delivery, Handler, RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

DLQ_SUFFIX = ".dlq"

#: Publishes a dead letter: (topic, key, payload, headers).
DeadLetter = Callable[[str, str, str, Mapping[str, str]], Awaitable[None]]


def dead_letter_topic(topic: str) -> str:
    """Where the messages of ``topic`` go that no attempt could handle."""
    return topic + DLQ_SUFFIX


async def handle(
    delivery: Delivery,
    group: str,
    handler: Handler,
    retry: RetryPolicy,
    dead_letter: DeadLetter,
) -> None:
    """Run ``handler`` until it returns, at most ``retry.max_attempts`` times in all
    (counting earlier deliveries), then dead-letter the message.  Returning means the
    caller may acknowledge; a cancellation propagates (no acknowledgement)."""
    attempt = delivery.attempt
    error = "delivered without acknowledgement more often than allowed"
    while attempt <= retry.max_attempts:
        try:
            await handler(dataclasses.replace(delivery, attempt=attempt))
            return
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if attempt >= retry.max_attempts:
                log.exception(
                    "consumer %s gave up on message %s of %s after %d attempt(s)",
                    group,
                    delivery.id,
                    delivery.topic,
                    attempt,
                )
                break
            delay = retry.delay(attempt)
            log.warning(
                "consumer %s failed on message %s of %s (attempt %d, retry in %.1fs): %s",
                group,
                delivery.id,
                delivery.topic,
                attempt,
                delay,
                error,
            )
            await asyncio.sleep(delay)
            attempt += 1
    headers = {
        "error": error[:2000],
        "group": group,
        "attempts": str(attempt),
        "topic": delivery.topic,
        "id": delivery.id,
    }
    await dead_letter(dead_letter_topic(delivery.topic), delivery.key, delivery.payload, headers)


class Acknowledgements:
    """Acknowledgements in flight.  One that has started is finished even if the
    consumer is stopped at that moment (``stop`` waits for them): a message handled
    just before a stop is not handled again after it."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[Any]] = set()

    async def send(self, acknowledgement: Awaitable[T]) -> T:
        future = asyncio.ensure_future(acknowledgement)
        self._pending.add(future)
        future.add_done_callback(_settle)
        future.add_done_callback(self._pending.discard)
        return await asyncio.shield(future)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def _settle(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: an awaiter that was cancelled cannot


#: How long stopping a consumer waits for its task and its acknowledgements.
STOP_SECONDS = 15.0


async def stop_consumer(name: str, task: asyncio.Task[None], acks: Acknowledgements) -> None:
    """Cancel a consumer's task and let started acknowledgements finish; a step that
    does not end within ``STOP_SECONDS`` is logged and left behind, so that a broker
    that stopped answering cannot hang a shutdown (what it had not acknowledged is
    redelivered)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=STOP_SECONDS)
    if not done:
        log.warning("consumer %s did not stop within %.0fs", name, STOP_SECONDS)
    elif not task.cancelled() and task.exception() is not None:
        log.warning("consumer %s had failed: %r", name, task.exception())
    try:
        async with asyncio.timeout(STOP_SECONDS):
            await acks.drain()
    except TimeoutError:
        log.warning("consumer %s: acknowledgements unfinished after %.0fs", name, STOP_SECONDS)
