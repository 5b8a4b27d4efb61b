"""OAuth 2.0 bearer tokens (RFC 6750) that are signed JWTs (RFC 7519, RFC 9068): checked
with PyJWT against the provider's keys, then mapped to permissions per tenant."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import jwt

from dicomcloud.config import AuthSettings
from dicomcloud.security.claims import grants_of, token_tenants
from dicomcloud.security.jwks import JwksCache
from dicomcloud.security.principal import AuthenticationFailed, Principal

if TYPE_CHECKING:
    from dicomcloud.cache import FailSafeCache

#: Claims every accepted token must carry (RFC 7519 4.1).
REQUIRED_CLAIMS = ("exp", "iss", "aud")
#: A verified token is remembered this many seconds (a viewer sends the same token with
#: every frame request), until the key set is fetched again; its ``exp`` is still
#: checked at every use.
VERIFIED_SECONDS = 60.0
#: Most tokens remembered at once (the oldest are forgotten first).
VERIFIED_MAX = 4096


class TokenValidator:
    """Validates bearer tokens of one issuer."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        default_tenant: str,
        cache: FailSafeCache | None = None,
    ) -> None:
        self._settings = settings
        self._default_tenant = default_tenant
        self.keys = JwksCache(
            issuer=settings.issuer,
            jwks_url=settings.jwks_url,
            ttl=settings.jwks_cache_seconds,
            min_refresh=settings.jwks_min_refresh_seconds,
            shared=cache,
        )
        #: token -> (its principal, its exp, monotonic time to forget it, key set fetch)
        self._verified: OrderedDict[str, tuple[Principal, float, float, int]] = OrderedDict()

    async def principal(self, token: str) -> Principal:
        """The caller the token proves; AuthenticationFailed saying why it does not."""
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, expires, forget_at, key_set = remembered
            if (
                time.monotonic() < forget_at
                and time.time() <= expires + self._leeway
                and key_set == self.keys.fetches  # a retired key signs nothing
            ):
                return principal
            del self._verified[token]
        claims = await self.claims(token)
        principal = self._principal_of(claims)
        self._verified[token] = (
            principal,
            float(claims["exp"]),
            time.monotonic() + VERIFIED_SECONDS,
            self.keys.fetches,
        )
        while len(self._verified) > VERIFIED_MAX:
            self._verified.popitem(last=False)
        return principal

    @property
    def _leeway(self) -> float:
        return self._settings.leeway_seconds

    def _principal_of(self, claims: dict[str, Any]) -> Principal:
        settings = self._settings
        tenants = token_tenants(
            claims,
            settings.tenant_claim,
            default_tenant=self._default_tenant,
            required=settings.require_tenant_claim,
        )
        subject = str(claims.get("sub") or claims.get("client_id") or "unknown")
        return Principal(subject, "bearer", grants_of(claims, settings.claim_rules(), tenants))

    async def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``: signature by one of the issuer's keys with an
        allowed algorithm, ``iss``, ``aud``, ``exp`` and ``nbf`` (RFC 7519 4.1)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise AuthenticationFailed(f"the token is not a JWS: {exc}") from exc
        algorithm = header.get("alg")
        if algorithm not in self._settings.algorithms:
            raise AuthenticationFailed(
                f"the token's algorithm {algorithm!r} is not allowed"
                f" (allowed: {', '.join(self._settings.algorithms)})"
            )
        kid = header.get("kid")
        jwk = await self.keys.jwk(kid if isinstance(kid, str) else None)
        if jwk.get("alg", algorithm) != algorithm:
            raise AuthenticationFailed(
                f"the token's algorithm {algorithm!r} is not its key's ({jwk.get('alg')!r})"
            )
        try:
            key = jwt.PyJWK(jwk, algorithm=algorithm)
        except jwt.PyJWKError as exc:
            raise AuthenticationFailed(f"the token's key cannot verify {algorithm}: {exc}") from exc
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_seconds,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationFailed("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthenticationFailed("the token is not valid yet (nbf/iat)") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthenticationFailed("the token's issuer is not the configured one") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthenticationFailed("the token is not meant for this archive (aud)") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthenticationFailed("the token's signature does not verify") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthenticationFailed(f"the token is invalid: {exc}") from exc
        return claims
