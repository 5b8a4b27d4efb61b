"""Puts ``dicomcloud.security``'s guard in front of the DICOMweb app when
``auth.mode`` asks for authentication (README "Security")."""

from __future__ import annotations

from starlette.applications import Starlette

from dicomcloud.app import Archive
from dicomcloud.errors import ConfigurationError
from dicomcloud.index.sql_index import SqlIndex
from dicomcloud.security.api_keys import ApiKeyStore
from dicomcloud.security.middleware import AuthMiddleware, Guard
from dicomcloud.security.tokens import TokenValidator


def guard_for(archive: Archive) -> Guard | None:
    """The guard the settings ask for; None when authentication is off."""
    settings = archive.settings
    auth = settings.auth
    if not auth.enabled:
        return None
    tokens = (
        TokenValidator(auth, default_tenant=settings.default_tenant, cache=archive.cache)
        if auth.oidc
        else None
    )
    api_keys = None
    if auth.api_keys:
        if not isinstance(archive.index, SqlIndex):
            raise ConfigurationError("API keys need an SQL index (index.url)")
        api_keys = ApiKeyStore(archive.index.runner)
    return Guard(auth, tokens=tokens, api_keys=api_keys)


def install_auth(app: Starlette, archive: Archive) -> None:
    """Guard every route of ``app`` but the health probes, if authentication is on."""
    guard = guard_for(archive)
    if guard is not None:
        app.add_middleware(AuthMiddleware, guard=guard)
