"""A cache that never fails a request: errors become misses, logged as warnings.

After a failure the backend is left alone for ``retry_after`` seconds (every call is
a miss at once, so a dead Redis costs no timeout per request); then the next call
tries it again.  Warnings are logged once per such period, not per request.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

from dicomcloud.errors import CacheUnavailable
from dicomcloud.ports import Cache

log = logging.getLogger(__name__)


class FailSafeCache:
    """``Cache`` operations that answer None (miss / not done) when the backend fails.

    What the archive and the security layer use: ``get`` / ``set`` with a TTL (series
    metadata, QIDO results, JWKS documents), ``incr`` for invalidation counters.
    """

    def __init__(self, backend: Cache, *, retry_after: float = 5.0) -> None:
        self.backend = backend
        self.retry_after = retry_after
        self._down_until = 0.0
        #: Failed operations since start (observability, tests).
        self.failures = 0

    @property
    def available(self) -> bool:
        """False while the backend is being left alone after a failure."""
        return time.monotonic() >= self._down_until

    def _failed(self, exc: CacheUnavailable) -> None:
        self.failures += 1
        if self.available:
            log.warning(
                "cache unavailable, serving from the source for %.0f s: %s",
                self.retry_after,
                exc.reason,
            )
        self._down_until = time.monotonic() + self.retry_after

    async def get(self, key: str) -> bytes | None:
        if not self.available:
            return None
        try:
            return await self.backend.get(key)
        except CacheUnavailable as exc:
            self._failed(exc)
            return None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None] | None:
        """The values of ``keys`` (None for a missing one); None if the cache failed."""
        if not self.available:
            return None
        try:
            return await self.backend.get_many(keys)
        except CacheUnavailable as exc:
            self._failed(exc)
            return None

    async def set(self, key: str, value: bytes, ttl: float) -> bool:
        """Keep ``value`` for ``ttl`` seconds; False if the cache failed."""
        if not self.available:
            return False
        try:
            await self.backend.set(key, value, ttl)
        except CacheUnavailable as exc:
            self._failed(exc)
            return False
        return True

    async def delete(self, key: str) -> bool:
        if not self.available:
            return False
        try:
            await self.backend.delete(key)
        except CacheUnavailable as exc:
            self._failed(exc)
            return False
        return True

    async def incr(self, key: str) -> int | None:
        """The counter's new value; None if the cache failed."""
        if not self.available:
            return None
        try:
            return await self.backend.incr(key)
        except CacheUnavailable as exc:
            self._failed(exc)
            return None

    async def close(self) -> None:
        with contextlib.suppress(CacheUnavailable):
            await self.backend.close()
