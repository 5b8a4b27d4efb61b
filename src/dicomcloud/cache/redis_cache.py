"""Shared cache on Redis (``redis://`` / ``rediss://``), with redis.asyncio.

Every key is prefixed with ``key_prefix`` (several archives, or test runs, can share
one Redis).  Values carry their TTL (``SET ... PX``); counters (``INCR``) none.
Timeouts are short: a cache that answers slowly is worse than none, and every
failure is ``CacheUnavailable`` for ``FailSafeCache`` to turn into a miss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from dicomcloud.errors import CacheUnavailable


class RedisCache:
    """The ``Cache`` port on a Redis server."""

    def __init__(self, url: str, *, key_prefix: str = "dicomcloud:", timeout: float = 0.5) -> None:
        self.key_prefix = key_prefix
        # decode_responses=False (the default): every reply is bytes.
        self._redis: Redis = Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            health_check_interval=30,
        )

    def _key(self, key: str) -> str:
        return self.key_prefix + key

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(self._key(key))
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"redis GET failed: {exc}") from exc
        return (
            value if value is None else bytes(value, "utf-8") if isinstance(value, str) else value
        )

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        try:
            values = await self._redis.mget([self._key(k) for k in keys])
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"redis MGET failed: {exc}") from exc
        return [v.encode() if isinstance(v, str) else v for v in values]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        try:
            await self._redis.set(self._key(key), value, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"redis SET failed: {exc}") from exc

    async def delete(self, key: str) -> None:
        try:
            await self._redis.delete(self._key(key))
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"redis DEL failed: {exc}") from exc

    async def incr(self, key: str) -> int:
        try:
            value: int = await self._redis.incr(self._key(key))
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"redis INCR failed: {exc}") from exc
        return value

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"redis PING failed: {exc}") from exc

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()
