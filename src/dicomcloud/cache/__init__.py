"""Caches, chosen by URL: ``memory://`` (default) or ``redis://host:port/db``.

What is cached, and why it stays correct:

* series metadata (the gzip'd DICOM JSON of a series, PS3.18 10.4.1.1.6) under its
  content address: the key holds the ETag, a fingerprint of the instances it was
  built from, so a new instance changes the key and nothing needs invalidating;
* QIDO-RS responses (``dicomcloud.services.search_cache``), keyed by tenant and the
  normalized query, stamped with the tenant's generation counter, which every index
  commit for that tenant increments before the store is acknowledged;
* anything with a TTL (JWKS documents of the security layer): ``FailSafeCache.get``
  and ``set``.

``memory://`` lives in one process: with several ``server.workers`` a commit in one
process cannot invalidate the others' memory, so QIDO results are cached only with
Redis, or with one worker.  Every use goes through ``FailSafeCache``: a cache outage
costs speed, never a failed request.
"""

from __future__ import annotations

from urllib.parse import urlparse

from dicomcloud.cache.failsafe import FailSafeCache
from dicomcloud.cache.memory import MemoryCache
from dicomcloud.errors import ConfigurationError
from dicomcloud.ports import Cache

__all__ = ["FailSafeCache", "MemoryCache", "open_cache"]


def open_cache(
    url: str,
    *,
    key_prefix: str = "dicomcloud:",
    max_entries: int = 10_000,
    max_bytes: int = 128 << 20,
    timeout: float = 0.5,
) -> Cache:
    """The cache backend for ``url`` (``memory://`` or ``redis://`` / ``rediss://``)."""
    scheme = urlparse(url).scheme
    if scheme == "memory":
        return MemoryCache(max_entries=max_entries, max_bytes=max_bytes)
    if scheme in ("redis", "rediss", "unix"):
        try:
            from dicomcloud.cache.redis_cache import RedisCache
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ConfigurationError(
                "cache.url redis:// needs redis: pip install 'dicomcloud[redis]'"
            ) from exc
        return RedisCache(url, key_prefix=key_prefix, timeout=timeout)
    raise ConfigurationError(
        f"cache.url scheme {scheme!r} is not supported (use memory:// or redis://host:port/db)"
    )
