"""The Cache port on memory and on a real Redis (127.0.0.1:6379, a key prefix per
test), the fail-safe wrapper on a dead port, and the QIDO-RS generation scheme on
both backends."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from dicomcloud.cache import FailSafeCache, MemoryCache, open_cache
from dicomcloud.cache.redis_cache import RedisCache
from dicomcloud.errors import CacheUnavailable, ConfigurationError
from dicomcloud.ports import Cache
from dicomcloud.services.search_cache import SearchCache

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2):
            return True
    except OSError:
        return False


def require_redis() -> None:
    from conftest import require

    require(redis_reachable(), "Redis is not running on 127.0.0.1:6379")


def dead_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "memory":
        backend: Cache = MemoryCache()
        yield backend
        return
    require_redis()
    prefix = f"dicomcloud-test:{uuid.uuid4().hex}:"
    backend = open_cache(REDIS_URL, key_prefix=prefix)
    try:
        yield backend
    finally:
        await backend.close()
        await drop_prefix(prefix)


async def drop_prefix(prefix: str) -> None:
    """Remove what a test left in Redis under its key prefix."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def eventually_none(cache: Cache, key: str) -> bool:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if await cache.get(key) is None:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_set_get_delete(cache: Cache) -> None:
    assert await cache.get("a") is None

    await cache.set("a", b"\x00value\xff", ttl=60)
    await cache.set("b", b"", ttl=60)

    assert await cache.get("a") == b"\x00value\xff"
    assert await cache.get_many(["a", "missing", "b"]) == [b"\x00value\xff", None, b""]
    await cache.delete("a")
    assert await cache.get("a") is None
    await cache.delete("a")  # absent: no error


async def test_entries_expire(cache: Cache) -> None:
    await cache.set("short", b"x", ttl=0.2)
    await cache.set("long", b"y", ttl=600)

    assert await eventually_none(cache, "short")
    assert await cache.get("long") == b"y"


async def test_counters(cache: Cache) -> None:
    assert await cache.incr("gen") == 1
    assert await cache.incr("gen") == 2
    assert await cache.get("gen") == b"2"
    assert await cache.get_many(["gen", "other"]) == [b"2", None]


async def test_ping(cache: Cache) -> None:
    await cache.ping()


async def test_redis_key_prefixes_keep_archives_apart() -> None:
    require_redis()
    prefix = f"dicomcloud-test:{uuid.uuid4().hex}:"
    one = RedisCache(REDIS_URL, key_prefix=prefix)
    two = RedisCache(REDIS_URL, key_prefix=f"dicomcloud-test:{uuid.uuid4().hex}:")
    try:
        await one.set("k", b"one", ttl=30)
        assert await two.get("k") is None
        assert await one.get("k") == b"one"
    finally:
        await one.close()
        await two.close()
        await drop_prefix(prefix)


# --- memory bounds ----------------------------------------------------------------------------


async def test_memory_cache_evicts_the_least_recently_used() -> None:
    cache = MemoryCache(max_entries=3, max_bytes=1 << 20)
    for key in "abc":
        await cache.set(key, key.encode(), ttl=60)
    assert await cache.get("a") == b"a"  # now the most recently used

    await cache.set("d", b"d", ttl=60)

    assert await cache.get_many(["a", "b", "c", "d"]) == [b"a", None, b"c", b"d"]
    assert len(cache) == 3


async def test_memory_cache_is_bounded_in_bytes() -> None:
    cache = MemoryCache(max_entries=1000, max_bytes=1000)
    for n in range(10):
        await cache.set(f"k{n}", bytes(200), ttl=60)

    assert cache.bytes <= 1000
    assert await cache.get("k9") == bytes(200)
    assert await cache.get("k0") is None
    await cache.set("huge", bytes(600), ttl=60)  # over a quarter of the bound: not kept
    assert await cache.get("huge") is None


# --- a cache outage ---------------------------------------------------------------------------


async def test_a_dead_redis_is_a_miss_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    backend = open_cache(f"redis://127.0.0.1:{dead_port()}/0", key_prefix="x:", timeout=0.5)
    with pytest.raises(CacheUnavailable):
        await backend.get("k")
    cache = FailSafeCache(backend, retry_after=30)

    with caplog.at_level(logging.WARNING, logger="dicomcloud.cache.failsafe"):
        assert await cache.get("k") is None
        assert await cache.set("k", b"v", ttl=10) is False
        assert await cache.incr("gen") is None
        assert await cache.get_many(["a", "b"]) is None

    assert not cache.available  # left alone until retry_after has passed
    warnings = [r for r in caplog.records if "cache unavailable" in r.getMessage()]
    assert len(warnings) == 1
    await cache.close()


async def test_the_fail_safe_cache_tries_again_after_the_pause() -> None:
    require_redis()
    prefix = f"dicomcloud-test:{uuid.uuid4().hex}:"
    cache = FailSafeCache(RedisCache(REDIS_URL, key_prefix=prefix), retry_after=0.1)
    cache._failed(CacheUnavailable("simulated outage"))
    assert await cache.set("k", b"v", ttl=5) is False  # still paused

    await asyncio.sleep(0.2)

    assert await cache.set("k", b"v", ttl=5) is True
    assert await cache.get("k") == b"v"
    await cache.close()
    await drop_prefix(prefix)


def test_unknown_cache_scheme() -> None:
    with pytest.raises(ConfigurationError, match="memcached"):
        open_cache("memcached://host")


# --- QIDO-RS generations ----------------------------------------------------------------------


async def test_search_results_are_served_until_the_tenant_commits(cache: Cache) -> None:
    search = SearchCache(FailSafeCache(cache), ttl=60)

    first = await search.lookup("t1", "query")  # starts the tenant's generation
    assert first.hit is None
    second = await search.lookup("t1", "query")
    assert second.hit is None
    await search.store(second, b"[results]")

    assert (await search.lookup("t1", "query")).hit == b"[results]"
    assert (await search.lookup("t1", "other query")).hit is None
    assert (await search.lookup("t2", "query")).hit is None

    await search.invalidate(["t2"])  # another tenant's commit changes nothing here
    assert (await search.lookup("t1", "query")).hit == b"[results]"
    await search.invalidate(["t1"])
    assert (await search.lookup("t1", "query")).hit is None


async def test_a_search_racing_a_commit_never_caches_stale_results(cache: Cache) -> None:
    search = SearchCache(FailSafeCache(cache), ttl=60)
    await search.lookup("t1", "q")

    racing = await search.lookup("t1", "q")  # read the index before the commit...
    await search.invalidate(["t1"])  # ...the commit lands...
    await search.store(racing, b"[before the commit]")  # ...and the old result is stored

    assert (await search.lookup("t1", "q")).hit is None


async def test_a_lost_invalidation_bypasses_the_cache_until_it_succeeds() -> None:
    """The outage is simulated at the wrapper (a real Redis cannot be stopped here)."""
    failing = FailSafeCache(MemoryCache(), retry_after=3600)
    search = SearchCache(failing, ttl=60)
    await search.lookup("t1", "q")
    ready = await search.lookup("t1", "q")
    await search.store(ready, b"[old]")
    assert (await search.lookup("t1", "q")).hit == b"[old]"

    failing._failed(CacheUnavailable("outage during the commit"))
    await search.invalidate(["t1"])  # not applied: the cache is down
    assert (await search.lookup("t1", "q")).hit is None

    failing._down_until = 0.0  # the cache is back: the old entry must not come back
    assert (await search.lookup("t1", "q")).hit is None
    assert (await search.lookup("t1", "q")).hit is None  # settled, and stale
