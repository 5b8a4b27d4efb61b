"""The guard in front of every DICOMweb route (QIDO-RS, WADO-RS, STOW-RS, WADO-URI and
whatever is added later: everything but ``OPEN_PATHS`` is guarded, default deny).

Per request: find the credentials (``Authorization: Bearer``, RFC 6750 2.1;
``Authorization: ApiKey`` or ``X-API-Key``), prove them, find the route's tenant with
``tenant_of`` and the permission its method needs, and answer

* 401 with a ``WWW-Authenticate`` challenge (RFC 9110 11.6.1, RFC 6750 3) when there
  are no credentials (no error code, RFC 6750 3.1) or they do not prove anyone
  (``error="invalid_token"``);
* 400 ``error="invalid_request"`` for a malformed ``Authorization`` header;
* 403 (``error="insufficient_scope"`` for bearer tokens) when the caller lacks the
  permission in that tenant, or the tenant is not one of the caller's;
* 503 when the identity provider's keys cannot be fetched.
"""

from __future__ import annotations

import json
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from dicomcloud.config import AuthSettings
from dicomcloud.errors import DicomCloudError
from dicomcloud.security.api_keys import ApiKeyStore
from dicomcloud.security.principal import (
    AuthenticationFailed,
    Permission,
    PermissionDenied,
    Principal,
    ProviderUnavailable,
)
from dicomcloud.security.tokens import TokenValidator

log = logging.getLogger(__name__)

#: Paths anyone may call: liveness and readiness probes of orchestrators, and where the
#: pages learn how to log in (public values only).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/ui", "/viewer", "/api/auth-config"})
#: Static pages and scripts of the study browser and the viewer: no patient data (their
#: DICOMweb calls are guarded like any other client's).
OPEN_PREFIXES = ("/ui/", "/viewer/")

#: CORS preflight requests carry no credentials (Fetch standard, CORS-preflight fetch)
#: and never return data; the app (or a CORS layer) answers them.
OPEN_METHODS = frozenset({"OPTIONS"})

#: HTTP method -> the permission it needs (RFC 9110 9.3); any other method needs admin.
METHOD_PERMISSIONS = {
    "GET": Permission.READ,
    "HEAD": Permission.READ,
    "POST": Permission.WRITE,
    "PUT": Permission.WRITE,
    "DELETE": Permission.DELETE,
}


def required_permission(method: str, path: str) -> Permission:
    """The permission a request needs: ``admin`` under any ``/admin`` path segment,
    otherwise by method (GET/HEAD read, POST/PUT write, DELETE delete)."""
    if "admin" in path.split("/"):
        return Permission.ADMIN
    return METHOD_PERMISSIONS.get(method.upper(), Permission.ADMIN)


class Guard:
    """Authenticates requests with the configured schemes."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        tokens: TokenValidator | None,
        api_keys: ApiKeyStore | None,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.api_keys = api_keys

    async def authenticate(self, request: Request) -> Principal:
        authorization = request.headers.get("authorization")
        api_key = request.headers.get("x-api-key")
        if authorization is None and api_key is None:
            raise AuthenticationFailed("authentication is required", error=None)
        if authorization is not None:
            scheme, _, credentials = authorization.strip().partition(" ")
            credentials = credentials.strip()
            if scheme.lower() == "bearer":
                if self.tokens is None:
                    raise AuthenticationFailed("bearer tokens are not accepted here", error=None)
                if not credentials or " " in credentials:
                    raise AuthenticationFailed(
                        "the Authorization header must be 'Bearer <token>'",
                        error="invalid_request",
                        scheme="bearer",
                    )
                try:
                    return await self.tokens.principal(credentials)
                except (AuthenticationFailed, PermissionDenied) as exc:
                    exc.scheme = "bearer"
                    raise
            if scheme.lower() == "apikey":
                api_key = credentials
            elif api_key is None:
                raise AuthenticationFailed(
                    f"the authentication scheme {scheme!r} is not accepted here", error=None
                )
        if self.api_keys is None:
            raise AuthenticationFailed("API keys are not accepted here", error=None)
        try:
            return await self.api_keys.principal(api_key or "")
        except AuthenticationFailed as exc:
            exc.scheme = "apikey"
            raise

    def challenges(self, error: AuthenticationFailed | PermissionDenied) -> list[str]:
        """``WWW-Authenticate`` values for a refusal (RFC 6750 3): on a 401 every scheme
        accepted here, the Bearer one with the error code when a token was refused; on a
        403 the Bearer ``insufficient_scope`` for a token, nothing for an API key."""
        realm = _quoted(self.settings.realm)
        description = _quoted(error.reason)
        if isinstance(error, PermissionDenied):
            if error.scheme != "bearer":
                return []
            return [
                f'Bearer realm={realm}, error="insufficient_scope", error_description={description}'
            ]
        values = []
        if self.tokens is not None:
            params = [f"realm={realm}"]
            if error.scheme == "bearer" and error.error is not None:
                params += [f"error={_quoted(error.error)}", f"error_description={description}"]
            values.append("Bearer " + ", ".join(params))
        if self.api_keys is not None:
            values.append(f"ApiKey realm={realm}")
        return values


def _quoted(text: str) -> str:
    """An RFC 9110 5.6.4 quoted-string (RFC 6750 3: error_description is %x20-7E only)."""
    clean = "".join(c if " " <= c <= "~" and c not in '"\\' else "'" for c in text)
    return f'"{clean}"'


#: Where the authenticated caller's name is noted for the access log.
PRINCIPAL_SCOPE_KEY = "dicomcloud.principal"


class AuthMiddleware:
    """ASGI middleware applying ``Guard`` to every request except ``OPEN_PATHS``."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in OPEN_PATHS
            or scope["path"].startswith(OPEN_PREFIXES)
            or scope["method"] in OPEN_METHODS
        ):
            await self.app(scope, receive, send)
            return
        from dicomcloud.dicomweb.request_context import TENANT_SCOPE_KEY, tenant_of

        routed = _routed(scope)
        if "route" in routed:  # the access record names what a refused request asked for
            scope["route"] = routed["route"]
        request = Request(routed)
        try:
            principal = await self.guard.authenticate(request)
            # Who and for which tenant, for the access record (never the credential).
            scope[PRINCIPAL_SCOPE_KEY] = principal.subject
            tenant = tenant_of(request)
            scope[TENANT_SCOPE_KEY] = tenant
            needed = required_permission(request.method, scope["path"])
            if not principal.may(needed, tenant):
                if not principal.acts_for(tenant):
                    raise PermissionDenied(
                        f"{principal.subject} may not act for tenant {tenant}",
                        scheme=principal.scheme,
                    )
                raise PermissionDenied(
                    f"{principal.subject} lacks the {needed.value} permission in tenant {tenant}",
                    scheme=principal.scheme,
                )
        except (AuthenticationFailed, PermissionDenied, ProviderUnavailable) as exc:
            await self._refuse(exc, request)(scope, receive, send)
            return
        except DicomCloudError as exc:  # the path's tenant is malformed, say
            await _json(exc.http_status, exc.reason)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def _refuse(self, exc: DicomCloudError, request: Request) -> Response:
        status = exc.http_status
        if isinstance(exc, AuthenticationFailed) and exc.error == "invalid_request":
            status = 400  # RFC 6750 3.1
        if isinstance(exc, ProviderUnavailable):
            log.error("%s %s: %s", request.method, request.url.path, exc.reason)
            return _json(status, exc.reason)
        log.info("%s %s refused (%d): %s", request.method, request.url.path, status, exc.reason)
        response = _json(status, exc.reason)
        assert isinstance(exc, AuthenticationFailed | PermissionDenied)
        for value in self.guard.challenges(exc):
            response.headers.append("WWW-Authenticate", value)
        return response


def _json(status: int, reason: str) -> Response:
    body = json.dumps({"status": status, "error": reason}, ensure_ascii=False)
    return Response(body, status, media_type="application/json")


def _routed(scope: Scope) -> Scope:
    """``scope`` with the route it will reach and its path parameters (the router has
    not run yet), so that ``tenant_of`` sees ``/tenants/{tenant}/...``."""
    app = scope.get("app")
    for route in getattr(getattr(app, "router", None), "routes", ()):
        match, child = route.matches(scope)
        if match is Match.FULL:
            return {**scope, **child, "route": route}
    return scope
