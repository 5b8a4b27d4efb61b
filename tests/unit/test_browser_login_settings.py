"""The browser login settings (``auth.browser_client_id`` and friends) and what the
pages are told from them (``security.browser_login``), without a provider."""

from __future__ import annotations

import asyncio

import pytest

from dicomcloud.config import load_settings
from dicomcloud.errors import ConfigurationError
from dicomcloud.security.browser_login import ProviderMetadata, browser_config

OIDC = {"auth__mode": "oidc", "auth__issuer": "https://idp", "auth__audience": "dicomcloud"}


def test_the_pages_log_in_only_with_oidc_and_a_client() -> None:
    assert not load_settings(**OIDC).auth.browser_login
    assert load_settings(**OIDC, auth__browser_client_id="pages").auth.browser_login
    assert not load_settings().auth.browser_login


def test_a_browser_client_without_oidc_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="accepts no bearer tokens"):
        load_settings(auth__mode="apikey", auth__browser_client_id="pages")


@pytest.mark.parametrize("endpoint", ["idp/authorize", "ftp://idp/authorize", "//idp/x"])
def test_endpoints_must_be_absolute_http_urls(endpoint: str) -> None:
    with pytest.raises(ConfigurationError, match="not an absolute http"):
        load_settings(**OIDC, auth__authorization_endpoint=endpoint)


@pytest.mark.parametrize("scope", ["dicom read", 'say"hi"', "", "back\\slash"])
def test_scopes_must_be_scope_tokens(scope: str) -> None:
    with pytest.raises(ConfigurationError, match="scope token"):
        load_settings(**OIDC, auth__browser_scopes=["openid", scope])


def test_configured_endpoints_need_no_discovery() -> None:
    settings = load_settings(
        **OIDC,
        auth__browser_client_id="pages",
        auth__authorization_endpoint="https://idp/authorize",
        auth__token_endpoint="https://idp/token",
        auth__browser_authorize_params={"audience": "dicomcloud"},
    ).auth

    # "https://idp" does not resolve: any discovery request would fail.
    config = asyncio.run(browser_config(settings, ProviderMetadata(settings)))

    assert config == {
        "mode": "oidc",
        "required": True,
        "login": True,
        "issuer": "https://idp",
        "client_id": "pages",
        "scope": "openid dicom:read dicom:write",
        "authorize_params": {"audience": "dicomcloud"},
        "authorization_endpoint": "https://idp/authorize",
        "token_endpoint": "https://idp/token",
        "end_session_endpoint": "",
    }
