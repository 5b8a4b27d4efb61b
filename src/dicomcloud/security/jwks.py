"""The identity provider's signing keys: a JWK Set (RFC 7517 5) fetched over HTTP,
found by OpenID Connect Discovery 1.0 (section 4) when no ``jwks_url`` is configured.

The set is kept for ``jwks_cache_seconds``.  A token whose ``kid`` is not in it makes
the set be fetched again at once (the provider rotated its keys), but at most every
``jwks_min_refresh_seconds``, so tokens with invented ``kid`` values cannot make the
archive hammer the provider.

With a shared cache (``[cache] url = "redis://..."``) the fetched JWK Set is also kept
there under the issuer's name, so the nodes of a cluster ask the provider once per TTL
between them rather than once each, and a node that meets a rotated ``kid`` first looks
at the set another node already fetched.  A cache outage only means fetching from the
provider (``FailSafeCache``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx

from dicomcloud.security.principal import AuthenticationFailed, ProviderUnavailable

if TYPE_CHECKING:
    from dicomcloud.cache import FailSafeCache

log = logging.getLogger(__name__)

#: Seconds to wait for the provider.
FETCH_TIMEOUT = 10.0


class JwksCache:
    """The signing keys of one provider, by ``kid``."""

    def __init__(
        self,
        *,
        issuer: str,
        jwks_url: str = "",
        ttl: float = 600.0,
        min_refresh: float = 10.0,
        shared: FailSafeCache | None = None,
    ) -> None:
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._shared = shared
        self._shared_key = "jwks:" + hashlib.sha256(f"{issuer}\n{jwks_url}".encode()).hexdigest()
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0
        #: Key sets fetched from the provider itself (not from the shared cache).
        self.provider_fetches = 0

    async def jwk(self, kid: str | None) -> dict[str, Any]:
        """The JWK (as a dict) with ``kid``; the only signing key when the token names
        none and the set has exactly one.  AuthenticationFailed for an unknown key."""
        if self._stale():
            await self._refresh(force=False)
        found = self._find(kid)
        if found is None and self._may_refetch():
            await self._refresh(force=True, kid=kid)
            found = self._find(kid)
        if found is None:
            shown = "no kid" if kid is None else f"kid {kid!r}"
            raise AuthenticationFailed(f"the token's signing key ({shown}) is not the issuer's")
        return found

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at > self._ttl

    def _may_refetch(self) -> bool:
        return self._fetched_at is None or (
            time.monotonic() - self._fetched_at >= self._min_refresh
        )

    async def _refresh(self, *, force: bool, kid: str | None = None) -> None:
        async with self._lock:
            # Another request may have refreshed while this one waited for the lock.
            if not (self._stale() or (force and self._may_refetch())):
                return
            shared = await self._from_shared()
            if shared is not None and (not force or kid in shared):
                self._keys = shared
                self._fetched_at = time.monotonic()
                self.fetches += 1
                return
            try:
                keys = await self._fetch()
            except ProviderUnavailable:
                if self._keys:  # keep serving with the keys we have
                    log.warning("JWK Set refresh failed; keeping %d known key(s)", len(self._keys))
                    self._fetched_at = time.monotonic()
                    return
                raise
            self._keys = keys
            self._fetched_at = time.monotonic()
            self.fetches += 1
            self.provider_fetches += 1
            await self._to_shared(keys)

    async def _from_shared(self) -> dict[str, dict[str, Any]] | None:
        """The key set another node put in the shared cache, if any."""
        if self._shared is None:
            return None
        raw = await self._shared.get(self._shared_key)
        if raw is None:
            return None
        try:
            keys = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(keys, dict) or not all(isinstance(k, dict) for k in keys.values()):
            return None
        return keys

    async def _to_shared(self, keys: dict[str, dict[str, Any]]) -> None:
        if self._shared is not None:
            await self._shared.set(self._shared_key, json.dumps(keys).encode(), self._ttl)

    async def _fetch(self) -> dict[str, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=True) as client:
            url = self._jwks_url or await self._discover(client)
            document = await _get_json(client, url, "JWK Set")
        raw_keys = document.get("keys")
        if not isinstance(raw_keys, list):
            raise ProviderUnavailable(f"the JWK Set at {url} has no 'keys' array")
        keys: dict[str, dict[str, Any]] = {}
        for number, jwk in enumerate(raw_keys):
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue  # encryption keys (RFC 7517 4.2) never verify a signature
            keys[str(jwk.get("kid", f"#{number}"))] = jwk
        log.info("fetched %d signing key(s) from %s", len(keys), url)
        return keys

    async def _discover(self, client: httpx.AsyncClient) -> str:
        """``jwks_uri`` of the issuer's discovery document (OIDC Discovery 4)."""
        url = self._issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await _get_json(client, url, "discovery document")
        if document.get("issuer") != self._issuer:  # OIDC Discovery 4.3
            raise ProviderUnavailable(
                f"the discovery document at {url} names issuer {document.get('issuer')!r},"
                f" not {self._issuer!r}"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise ProviderUnavailable(f"the discovery document at {url} has no jwks_uri")
        return jwks_uri


async def _get_json(client: httpx.AsyncClient, url: str, what: str) -> dict[str, Any]:
    try:
        response = await client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        document = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ProviderUnavailable(f"cannot fetch the identity provider's {what}: {exc}") from exc
    if not isinstance(document, dict):
        raise ProviderUnavailable(f"the identity provider's {what} at {url} is not an object")
    return document
