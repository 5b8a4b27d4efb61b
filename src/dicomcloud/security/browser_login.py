"""What the study browser and the OHIF viewer need to log in at the identity provider:
the authorization code flow of a public client with PKCE (RFC 6749 4.1, RFC 7636, OAuth
2.0 for Browser-Based Apps), done in the browser.

The server only tells the pages where to go (``/api/auth-config``, no secret in it): the
issuer, the client id, the scopes and the provider's endpoints, taken from its discovery
document (OpenID Connect Discovery 1.0 section 3) unless configured.  The pages exchange
the code for a token themselves and send it as ``Authorization: Bearer`` (RFC 6750 2.1),
which the guard checks like any other client's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from dicomcloud.config import AuthSettings
from dicomcloud.security.jwks import FETCH_TIMEOUT, _get_json
from dicomcloud.security.principal import ProviderUnavailable

#: Endpoints of the provider metadata the pages use (OIDC Discovery 3).
ENDPOINTS = ("authorization_endpoint", "token_endpoint", "end_session_endpoint")


class ProviderMetadata:
    """The issuer's discovery document, fetched when first needed and kept for
    ``jwks_cache_seconds`` (a failed fetch is retried at the next request)."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._document: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    def _needed(self) -> bool:
        settings = self._settings
        return not (settings.authorization_endpoint and settings.token_endpoint)

    async def document(self) -> dict[str, Any]:
        """The discovery document (empty when every endpoint is configured)."""
        if not self._needed():
            return {}
        async with self._lock:
            fresh = time.monotonic() - self._fetched_at < self._settings.jwks_cache_seconds
            if self._document is None or not fresh:
                self._document = await self._fetch()
                self._fetched_at = time.monotonic()
            return self._document

    async def _fetch(self) -> dict[str, Any]:
        issuer = self._settings.issuer
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=True) as client:
            document = await _get_json(client, url, "discovery document")
        if document.get("issuer") != issuer:  # OIDC Discovery 4.3
            raise ProviderUnavailable(
                f"the discovery document at {url} names issuer {document.get('issuer')!r},"
                f" not {issuer!r}"
            )
        return document


def disabled_config(settings: AuthSettings) -> dict[str, Any]:
    """The pages' configuration when they do not log in."""
    return {
        "mode": settings.mode or "none",
        "required": settings.enabled,
        "login": False,
    }


async def browser_config(settings: AuthSettings, metadata: ProviderMetadata) -> dict[str, Any]:
    """The pages' login configuration: public values only (no secret exists: the client
    is public and proves itself with PKCE).  ProviderUnavailable when the provider's
    discovery document cannot be had and the endpoints are not configured."""
    if not settings.browser_login:
        return disabled_config(settings)
    document = await metadata.document()
    endpoints: dict[str, str] = {}
    for name in ENDPOINTS:
        value = getattr(settings, name) or document.get(name) or ""
        endpoints[name] = value if isinstance(value, str) else ""
    for name in ("authorization_endpoint", "token_endpoint"):
        if not endpoints[name]:
            raise ProviderUnavailable(
                f"the identity provider {settings.issuer} names no {name} (set auth.{name})"
            )
    methods = document.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:  # RFC 8414 2
        raise ProviderUnavailable(
            f"the identity provider {settings.issuer} does not support PKCE with S256"
        )
    config: dict[str, Any] = {
        "mode": settings.mode,
        "required": True,
        "login": True,
        "issuer": settings.issuer,
        "client_id": settings.browser_client_id,
        "scope": " ".join(settings.browser_scopes),
        "authorize_params": dict(settings.browser_authorize_params),
        **endpoints,
    }
    jwks_uri = settings.jwks_url or document.get("jwks_uri")
    if isinstance(jwks_uri, str) and jwks_uri:
        config["jwks_uri"] = jwks_uri
    return config
