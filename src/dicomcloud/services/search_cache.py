"""Hot QIDO-RS results (PS3.18 10.6), cached per tenant and invalidated by commits.

Each tenant has a generation counter in the cache.  A cached response is stored with
the generation read *before* its index query ran, and served only while the counter
still holds that value.  Every index commit increments the counter of the tenants it
wrote to before any store of the batch is acknowledged, so a search that follows an
acknowledged STOW-RS or C-STORE never sees the results from before it (and a search
racing with the commit stores its results under the old generation, already stale).

If the cache fails to take an increment, the tenant is marked: its searches bypass
the cache until an increment succeeds again (retried on every search), so a Redis
outage can never leave stale results behind it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from dicomcloud.cache.failsafe import FailSafeCache


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a search found in the cache, and how to store its own result."""

    hit: bytes | None
    entry_key: str
    generation: bytes | None  # None: do not store (cache down or tenant unsettled)


class SearchCache:
    """Get and put QIDO-RS responses by tenant and normalized query."""

    def __init__(self, cache: FailSafeCache, *, ttl: float, enabled: bool = True) -> None:
        self.cache = cache
        self.ttl = ttl
        self.enabled = enabled and ttl > 0
        self._unsettled: set[str] = set()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _generation_key(tenant_id: str) -> str:
        return f"qido-gen:{tenant_id}"

    async def lookup(self, tenant_id: str, normalized_query: str) -> Lookup:
        """The cached response for this query, if still valid."""
        digest = hashlib.sha256(normalized_query.encode()).hexdigest()[:40]
        entry_key = f"qido:{tenant_id}:{digest}"
        if not self.enabled:
            return Lookup(None, entry_key, None)
        if tenant_id in self._unsettled and not await self._settle(tenant_id):
            return Lookup(None, entry_key, None)
        gen_key = self._generation_key(tenant_id)
        found = await self.cache.get_many([gen_key, entry_key])
        if found is None:
            return Lookup(None, entry_key, None)
        generation, entry = found
        if generation is None:
            # First search of the tenant (or the counter was evicted): start one.
            await self.cache.incr(gen_key)
            self.misses += 1
            return Lookup(None, entry_key, None)
        if entry is not None:
            stamp, _, body = entry.partition(b"\n")
            if stamp == generation:
                self.hits += 1
                return Lookup(body, entry_key, generation)
        self.misses += 1
        return Lookup(None, entry_key, generation)

    async def store(self, lookup: Lookup, body: bytes) -> None:
        """Keep ``body`` as the response of the looked-up query."""
        if lookup.generation is not None:
            await self.cache.set(lookup.entry_key, lookup.generation + b"\n" + body, self.ttl)

    async def invalidate(self, tenant_ids: Iterable[str]) -> None:
        """A commit wrote to these tenants: their cached responses are stale."""
        if not self.enabled:
            return
        for tenant_id in set(tenant_ids):
            if await self.cache.incr(self._generation_key(tenant_id)) is None:
                self._unsettled.add(tenant_id)

    async def _settle(self, tenant_id: str) -> bool:
        if await self.cache.incr(self._generation_key(tenant_id)) is None:
            return False
        self._unsettled.discard(tenant_id)
        return True
