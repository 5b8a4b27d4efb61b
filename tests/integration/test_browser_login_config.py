"""How the study browser and the viewer learn to log in (``/api/auth-config``) and the
viewer's ``oidc`` block, against a real OpenID provider (panva's ``oidc-provider``) whose
discovery document gives the endpoints, and the test issuer whose does not."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from conftest import ArchiveFactory
from integration.node_oidc_provider import CLIENT_ID, NodeProvider, node_provider
from integration.oidc_issuer import AUDIENCE, local_issuer
from integration.test_ui_routes import fake_bundle, fake_ohif3

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def provider() -> Iterator[NodeProvider]:
    with node_provider(redirect_uris=["http://testserver/ui/"]) as running:
        yield running


async def test_without_authentication_the_pages_do_not_log_in(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive()

    response = await local.client.get("/api/auth-config")

    assert response.status_code == 200
    assert response.json() == {"mode": "none", "required": False, "login": False}


async def test_the_login_configuration_comes_from_discovery_and_is_open(
    make_archive: ArchiveFactory, provider: NodeProvider
) -> None:
    local = await make_archive(
        auth__mode="oidc",
        auth__issuer=provider.url,
        auth__audience=AUDIENCE,
        auth__browser_client_id=CLIENT_ID,
        auth__browser_authorize_params={"resource": AUDIENCE},
    )
    async with httpx.AsyncClient() as client:
        discovery = (await client.get(f"{provider.url}/.well-known/openid-configuration")).json()

    response = await local.client.get("/api/auth-config")
    refused = await local.client.get("/dicom-web/studies")

    assert response.status_code == 200  # no credentials needed
    assert response.headers["cache-control"] == "no-cache"
    assert response.json() == {
        "mode": "oidc",
        "required": True,
        "login": True,
        "issuer": provider.url,
        "client_id": CLIENT_ID,
        "scope": "openid dicom:read dicom:write",
        "authorize_params": {"resource": AUDIENCE},
        "authorization_endpoint": discovery["authorization_endpoint"],
        "token_endpoint": discovery["token_endpoint"],
        "end_session_endpoint": discovery["end_session_endpoint"],
        "jwks_uri": discovery["jwks_uri"],
    }
    assert "secret" not in response.text
    assert refused.status_code == 401


async def test_configured_endpoints_replace_discovery(make_archive: ArchiveFactory) -> None:
    with local_issuer() as issuer:  # its discovery document names no authorization endpoint
        missing = await make_archive(
            auth__mode="oidc",
            auth__issuer=issuer.url,
            auth__audience=AUDIENCE,
            auth__browser_client_id="pages",
        )
        configured = await make_archive(
            auth__mode="oidc",
            auth__issuer=issuer.url,
            auth__audience=AUDIENCE,
            auth__browser_client_id="pages",
            auth__browser_scopes=["openid", "dicom:read"],
            auth__authorization_endpoint="https://idp.example/authorize",
            auth__token_endpoint="https://idp.example/token",
        )

        unavailable = await missing.client.get("/api/auth-config")
        response = await configured.client.get("/api/auth-config")

    assert unavailable.status_code == 503
    assert "auth.authorization_endpoint" in unavailable.json()["error"]
    assert response.status_code == 200
    body = response.json()
    assert body["authorization_endpoint"] == "https://idp.example/authorize"
    assert body["token_endpoint"] == "https://idp.example/token"
    assert body["end_session_endpoint"] == ""
    assert body["scope"] == "openid dicom:read"


async def test_oidc_without_a_browser_client_says_login_is_required(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(
        auth__mode="oidc", auth__issuer="http://127.0.0.1:9/", auth__audience=AUDIENCE
    )

    response = await local.client.get("/api/auth-config")

    assert response.json() == {"mode": "oidc", "required": True, "login": False}


async def test_the_viewer_logs_in_with_the_same_client_using_pkce(
    make_archive: ArchiveFactory, provider: NodeProvider
) -> None:
    local = await make_archive(
        auth__mode="oidc",
        auth__issuer=provider.url,
        auth__audience=AUDIENCE,
        auth__browser_client_id=CLIENT_ID,
    )
    fake_bundle(local.data_dir / "viewer")

    script = await local.client.get("/viewer/app-config.js")

    assert script.status_code == 200
    assert script.headers["cache-control"] == "no-cache"
    head, _, block = script.text.partition("window.config.oidc = [")
    assert head.startswith("window.config = {};")
    client = json.loads(block.rstrip().removesuffix("];"))
    assert client["authority"] == provider.url
    assert client["client_id"] == CLIENT_ID
    assert client["response_type"] == "code"  # oidc-client: code flow with PKCE
    assert client["redirect_uri"] == "/callback"  # under routerBasename: /viewer/callback
    assert client["scope"] == "openid dicom:read dicom:write"
    assert client["metadata"]["token_endpoint"].startswith(provider.url)


async def test_ohif3_logs_in_with_the_same_client_using_pkce(
    make_archive: ArchiveFactory, provider: NodeProvider
) -> None:
    local = await make_archive(
        auth__mode="oidc",
        auth__issuer=provider.url,
        auth__audience=AUDIENCE,
        auth__browser_client_id=CLIENT_ID,
    )
    fake_ohif3(local.data_dir / "viewer")

    script = await local.client.get("/viewer/app-config.js")

    assert script.status_code == 200
    head, _, block = script.text.partition("window.config.oidc = [")
    assert head.startswith("window.config = {};")
    settings, _, logout = block.partition("];\n")
    client = json.loads(settings)
    assert client["authority"] == provider.url and client["client_id"] == CLIENT_ID
    assert client["response_type"] == "code"  # oidc-client-ts: code flow with PKCE
    assert client["redirect_uri"] == "/callback"
    assert client["silent_redirect_uri"] == "/silent-refresh.html"
    assert client["metadata"]["authorization_endpoint"].startswith(provider.url)
    # Back to the study browser after logging out (not OHIF's own study route).
    assert "post_logout_redirect_uri" not in client
    assert logout.startswith("window.config.oidc[0].post_logout_redirect_uri = new URL('../ui/'")


async def test_the_viewer_config_is_unchanged_without_authentication(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive()
    fake_bundle(local.data_dir / "viewer")

    script = await local.client.get("/viewer/app-config.js")

    assert script.text == "window.config = {};"


async def test_a_discovery_document_of_another_issuer_is_refused(
    make_archive: ArchiveFactory, provider: NodeProvider
) -> None:
    local = await make_archive(
        auth__mode="oidc",
        auth__issuer=provider.url + "/",  # not the issuer the document names (Discovery 4.3)
        auth__audience=AUDIENCE,
        auth__browser_client_id=CLIENT_ID,
    )

    response = await local.client.get("/api/auth-config")

    assert response.status_code == 503
    assert "names issuer" in response.json()["error"]
