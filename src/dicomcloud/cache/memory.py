"""In-process cache (``memory://``, the default): a bounded LRU with per-entry TTL.

Bounded twice: at most ``max_entries`` entries and ``max_bytes`` bytes of values; the
least recently used go first.  A value larger than a quarter of ``max_bytes`` is not
kept (it would push out everything else).  Counters (``incr``) are few (one per
tenant) and are never evicted.  One process only: see ``dicomcloud.cache`` for what
that means with several workers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence


class MemoryCache:
    """The ``Cache`` port in this process's memory (never unavailable)."""

    def __init__(self, *, max_entries: int = 10_000, max_bytes: int = 128 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._counters: dict[str, int] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        return self._get(key)

    def _get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            counter = self._counters.get(key)
            return None if counter is None else str(counter).encode()
        expires, value = found
        if expires <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if key in self._entries:
            self._drop(key)
        if ttl <= 0 or len(value) > self.max_bytes // 4:
            return
        self._entries[key] = (time.monotonic() + ttl, value)
        self.bytes += len(value)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def delete(self, key: str) -> None:
        self._drop(key)
        self._counters.pop(key, None)

    async def incr(self, key: str) -> int:
        value = self._counters.get(key, 0) + 1
        self._counters[key] = value
        return value

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _drop(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self.bytes -= len(found[1])
