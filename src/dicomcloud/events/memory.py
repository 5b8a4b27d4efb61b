"""In-process event bus: the embedded default and the reference implementation."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: str
    payload: str


class MemoryEventBus:
    """Fan-out to asyncio queues; each subscriber sees every message of its topics."""

    def __init__(self, max_queue: int = 10_000) -> None:
        self._subscribers: dict[str, list[asyncio.Queue[Message]]] = defaultdict(list)
        self._max_queue = max_queue
        self.published = 0

    def subscribe(self, topic: str) -> asyncio.Queue[Message]:
        queue: asyncio.Queue[Message] = asyncio.Queue(self._max_queue)
        self._subscribers[topic].append(queue)
        return queue

    async def publish(self, topic: str, key: str, payload: str) -> None:
        message = Message(topic, key, payload)
        for queue in self._subscribers.get(topic, []):
            await queue.put(message)
        self.published += 1

    async def close(self) -> None:
        self._subscribers.clear()
