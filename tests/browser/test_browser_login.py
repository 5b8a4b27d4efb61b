"""Logging in from the browser when authentication is on, against a real OpenID provider
(panva's ``oidc-provider`` in Node.js, ``tests/oidc_provider``) and a real
``dicomcloud serve`` with ``auth.mode = "oidc"``.

The study browser goes to the provider (authorization code with PKCE), a person signs in
on the provider's own form, the browser comes back, exchanges the code and from then on
sends ``Authorization: Bearer`` with every call (search, thumbnails, status, the zip
download); a refused token makes it log in again; logging out ends the provider's
session.  The OHIF viewer logs in at the same provider with the same client.  Without
a token DICOMweb answers 401.  No request fails and none goes to a third host.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pydicom
import pytest
from playwright.sync_api import Browser, Page, Request, expect

from conftest import RealServer, clean_environment, free_port, require, running_server
from integration.node_oidc_provider import AUDIENCE, CLIENT_ID, NodeProvider, node_provider
from integration.support import multipart_related

from .conftest import (
    ARTIFACTS,
    CACHE,
    DATASET,
    INSTALL,
    OHIF2,
    SEEN_TOUR,
    WAIT_MS,
    NetworkLog,
    sample_file,
)
from .test_viewer import STUDY_URL, THUMBNAIL, VIEWPORT, shows_an_image

pytestmark = pytest.mark.timeout(420)

CT = sample_file("CT_small.dcm")
USER = "alice"


@dataclass
class SecuredSite:
    server: RealServer
    provider: NodeProvider

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    @property
    def provider_host(self) -> str:
        return urlsplit(self.provider.url).netloc


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredSite]:
    """The viewer installed, the provider and the archive started (each knowing the
    other's address), and the dataset stored with a token of the provider."""
    data_dir = tmp_path_factory.mktemp("login") / "data"
    data_dir.mkdir(parents=True)
    install = subprocess.run(
        [*INSTALL, "--data-dir", str(data_dir), "--cache-dir", str(CACHE)],
        capture_output=True,
        text=True,
        env=clean_environment(),
        timeout=600,
        check=False,
    )
    require(install.returncode == 0, f"dicomcloud viewer install failed:\n{install.stderr}")
    provider_port = free_port()
    issuer = f"http://127.0.0.1:{provider_port}"
    env = {
        "DICOMCLOUD_AUTH__MODE": "oidc",
        "DICOMCLOUD_AUTH__ISSUER": issuer,
        "DICOMCLOUD_AUTH__AUDIENCE": AUDIENCE,
        "DICOMCLOUD_AUTH__BROWSER_CLIENT_ID": CLIENT_ID,
    }
    with running_server(data_dir, env) as server:
        base = server.base_url
        with node_provider(
            port=provider_port,
            audience=AUDIENCE,
            redirect_uris=[f"{base}/ui/", f"{base}/viewer/callback"],
            post_logout_redirect_uris=[f"{base}/ui/", f"{base}/viewer/"],
        ) as provider:
            assert provider.url == issuer
            token = provider.client_token(AUDIENCE)
            body, content_type = multipart_related([path.read_bytes() for path in DATASET])
            stored = httpx.post(
                f"{server.dicomweb_url}/studies",
                content=body,
                headers={
                    "Content-Type": content_type,
                    "Accept": "application/dicom+json",
                    "Authorization": f"Bearer {token}",
                },
                timeout=120,
            )
            assert stored.status_code == 200, stored.text
            yield SecuredSite(server, provider)


@dataclass
class Traffic:
    """Every request the page made (to look at their headers once the page settled)."""

    requests: list[Request]

    def to(self, base_url: str, *prefixes: str) -> list[Request]:
        return [
            r
            for r in self.requests
            if r.url.startswith(base_url) and urlsplit(r.url).path.startswith(prefixes)
        ]


@pytest.fixture
def network(secured: SecuredSite) -> NetworkLog:
    # OHIF 3 starts loading its chunks before it finds it has no user and leaves for
    # the provider, which aborts them; its files only (a DICOMweb call still counts).
    return NetworkLog(secured.host, other_hosts=(secured.provider_host,), abortable=("/viewer/",))


@pytest.fixture
def traffic() -> Traffic:
    return Traffic([])


@pytest.fixture
def page(
    browser: Browser,
    secured: SecuredSite,
    network: NetworkLog,
    traffic: Traffic,
    request: pytest.FixtureRequest,
) -> Iterator[Page]:
    """A fresh browser (no session at the provider) on the secured site; the test fails
    if any request failed, answered 4xx/5xx unexpectedly, or went to a third host."""
    context = browser.new_context(
        base_url=secured.base_url, viewport={"width": 1280, "height": 800}, accept_downloads=True
    )
    context.add_init_script(SEEN_TOUR)
    log = network
    context.on("request", lambda r: (log.request(r.url), traffic.requests.append(r)))
    context.on("response", lambda r: log.response(r.status, r.request.method, r.url))
    context.on("requestfailed", lambda r: log.failed(r.url, r.failure))
    opened = context.new_page()
    opened.on("console", lambda m: log.console(m.type, m.text))
    opened.on("pageerror", lambda e: log.problems.append(f"page error: {e}"))
    opened.set_default_timeout(WAIT_MS)
    try:
        yield opened
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = request.node.name
        opened.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        (ARTIFACTS / f"{name}.requests.txt").write_text("\n".join(log.requests) + "\n")
        problems = list(log.problems)
        context.close()
    assert not problems, "\n".join(problems)


def claims_of(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def sign_in(page: Page, provider: NodeProvider, *, shot: str | None = None) -> None:
    """On the provider's development pages: sign in as USER, then allow the scopes."""
    page.wait_for_url(f"{provider.url}/interaction/**")
    page.wait_for_selector("input[name=login]")
    if shot:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / shot))
    page.fill("input[name=login]", USER)
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")
    page.wait_for_selector("button:has-text('Continue')")
    page.click("button:has-text('Continue')")


def bearer_tokens(requests: list[Request]) -> set[str]:
    """The bearer tokens the requests carried; fails for a request without one."""
    tokens = set()
    for r in requests:
        authorization = r.all_headers().get("authorization", "")
        assert authorization.startswith("Bearer "), f"{r.method} {r.url} carried no bearer token"
        tokens.add(authorization.removeprefix("Bearer "))
    return tokens


def test_the_study_browser_logs_in_and_sends_the_token(
    page: Page, secured: SecuredSite, network: NetworkLog, traffic: Traffic
) -> None:
    ct = pydicom.dcmread(CT)
    page.goto("/ui/")

    sign_in(page, secured.provider, shot="login-provider-form.png")

    page.wait_for_url(f"{secured.base_url}/ui/**")
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#user")).to_have_text(f"Signed in as {USER}")
    expect(page.locator("#status")).to_contain_text("Online")
    # The code and state are gone from the address bar.
    assert urlsplit(page.url).query == ""
    page.fill("#search [name=PatientID]", "1CT1")
    page.click("#search button[type=submit]")
    row = page.locator(f'#studies tr[data-study="{ct.StudyInstanceUID}"]')
    expect(row).to_have_count(1)
    page.wait_for_selector("body[data-pending='0']", state="attached")
    expect(row.locator("img[data-series]").first).to_have_js_property("complete", True)
    with page.expect_download() as download:
        row.locator("button", has_text="Download").click()
    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    assert len(archive.namelist()) == 1
    page.set_input_files("#files", str(sample_file("MR_small.dcm")))  # STOW-RS
    expect(page.locator("#upload-result")).to_have_text("1 instance stored.")
    page.wait_for_selector("body[data-pending='0']", state="attached")

    # The authorization request: code flow, S256 challenge, state and nonce.
    authorize = [r for r in traffic.requests if r.url.startswith(f"{secured.provider.url}/auth?")]
    assert len(authorize) == 1
    params = {k: v[0] for k, v in parse_qs(urlsplit(authorize[0].url).query).items()}
    assert params["response_type"] == "code"
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == f"{secured.base_url}/ui/"
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43
    assert params["state"] and params["nonce"]
    # Every call to the archive carried the one access token, issued for the archive.
    calls = traffic.to(secured.base_url, "/dicom-web/", "/api/status")
    assert {urlsplit(r.url).path.split("/")[-1] for r in calls} >= {
        "studies",
        "series",
        "thumbnail",
    }
    assert any(r.headers.get("accept") == "application/zip" for r in calls)
    assert any(r.method == "POST" and urlsplit(r.url).path == "/dicom-web/studies" for r in calls)
    (token,) = bearer_tokens(calls)
    claims = claims_of(token)
    assert claims["iss"] == secured.provider.url
    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == USER
    assert "dicom:read" in claims["scope"].split()
    stored = json.loads(page.evaluate("sessionStorage.getItem('dicomcloud.token')"))
    assert stored["access_token"] == token

    # A token the archive refuses (expired, revoked): the page logs in again, at once
    # since the provider still knows the person, and gets a new token.
    page.evaluate(
        """() => {
            const token = JSON.parse(sessionStorage.getItem('dicomcloud.token'));
            token.access_token = 'revoked.' + token.access_token;
            sessionStorage.setItem('dicomcloud.token', JSON.stringify(token));
            sessionStorage.setItem('dicomcloud.login-attempt', '0');
        }"""
    )
    network.expect_status(401, "/api/status")
    before = len(traffic.requests)
    page.reload()
    page.wait_for_url(f"{secured.base_url}/ui/?*")  # back from the provider with a code
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#user")).to_have_text(f"Signed in as {USER}")
    page.wait_for_selector("body[data-pending='0']", state="attached")
    later = Traffic(traffic.requests[before:]).to(secured.base_url, "/dicom-web/")
    (renewed,) = bearer_tokens(later)
    assert renewed != token

    # Logging out ends the provider's session: the next visit asks to sign in again.
    page.click("#logout")
    page.wait_for_url(f"{secured.provider.url}/session/end**")
    page.click("button[name=logout]")
    page.wait_for_url(f"{secured.provider.url}/interaction/**")
    expect(page.locator("input[name=login]")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('dicomcloud.token')") is None


def test_delete_without_the_delete_permission_is_refused_with_a_clear_message(
    page: Page, secured: SecuredSite, network: NetworkLog, traffic: Traffic
) -> None:
    """The browser asks for dicom:read and dicom:write only (auth.browser_scopes): the
    DELETE carries the token, the archive answers 403, the page says why and the study
    stays."""
    ct = pydicom.dcmread(CT)
    path = f"/dicom-web/studies/{ct.StudyInstanceUID}"
    network.expect_status(403, path)
    page.goto("/ui/")
    sign_in(page, secured.provider)
    page.wait_for_url(f"{secured.base_url}/ui/**")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#search [name=PatientID]", "1CT1")
    page.click("#search button[type=submit]")
    row = page.locator(f'#studies tr[data-study="{ct.StudyInstanceUID}"]')
    expect(row).to_have_count(1)

    row.get_by_role("button", name=re.compile(r"^Delete study of ")).click()
    page.click("#confirm-delete-ok")

    expect(page.locator("#message")).to_have_text(
        "Delete refused: you are not allowed to delete (the delete permission is needed)."
    )
    expect(row).to_have_count(1)
    deletes = [r for r in traffic.to(secured.base_url, path) if r.method == "DELETE"]
    assert len(deletes) == 1
    (token,) = bearer_tokens(deletes)
    assert "dicom:delete" not in claims_of(token)["scope"].split()
    page.wait_for_selector("body[data-pending='0']", state="attached")


def test_the_viewer_logs_in_at_the_same_provider(
    page: Page, secured: SecuredSite, traffic: Traffic
) -> None:
    ct = pydicom.dcmread(CT)
    page.goto(f"/viewer/viewer/{ct.StudyInstanceUID}")

    sign_in(page, secured.provider)

    page.wait_for_url(STUDY_URL.format(uid=ct.StudyInstanceUID))
    viewport = page.locator(VIEWPORT).first
    viewport.wait_for()
    shows_an_image(viewport, "viewer-login-ct-viewport")
    shows_an_image(page.locator(THUMBNAIL).first, "viewer-login-ct-thumbnail", spread=60)
    if OHIF2:
        expect(page.locator(".OHIFCornerstoneViewportOverlay").first).to_contain_text("1CT1")
    authorize = [r for r in traffic.requests if r.url.startswith(f"{secured.provider.url}/auth?")]
    params = parse_qs(urlsplit(authorize[0].url).query)
    assert params["code_challenge_method"] == ["S256"]
    assert params["redirect_uri"] == [f"{secured.base_url}/viewer/callback"]
    calls = traffic.to(secured.base_url, "/dicom-web/")
    assert calls
    (token,) = bearer_tokens(calls)
    assert claims_of(token)["aud"] == AUDIENCE


def test_without_a_token_dicomweb_answers_401(secured: SecuredSite) -> None:
    base = secured.base_url
    token = secured.provider.client_token(AUDIENCE, scope="dicom:read")

    refused = httpx.get(f"{base}/dicom-web/studies", timeout=60)
    status = httpx.get(f"{base}/api/status", timeout=60)
    page = httpx.get(f"{base}/ui/", timeout=60)
    config = httpx.get(f"{base}/api/auth-config", timeout=60)
    allowed = httpx.get(
        f"{base}/dicom-web/studies", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )

    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer ")
    assert status.status_code == 401
    assert page.status_code == 200  # the page itself holds no data
    assert config.status_code == 200 and config.json()["client_id"] == CLIENT_ID
    assert allowed.status_code == 200
    found = {study["0020000D"]["Value"][0] for study in allowed.json()}
    assert pydicom.dcmread(CT).StudyInstanceUID in found


def test_an_answer_to_a_login_not_started_here_is_refused(
    page: Page, secured: SecuredSite, traffic: Traffic
) -> None:
    """A code injected into the redirect URI (RFC 6749 10.12, CSRF) is not exchanged."""
    page.goto("/ui/?code=stolen-code&state=forged-state")

    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#message")).to_contain_text("(state)")
    expect(page.locator("#user")).to_be_hidden()
    assert not [r for r in traffic.requests if r.url.startswith(f"{secured.provider.url}/token")]
    assert not traffic.to(secured.base_url, "/dicom-web/")
    assert page.evaluate("sessionStorage.getItem('dicomcloud.token')") is None


def test_the_code_challenge_is_rfc_7636_s256(page: Page, secured: SecuredSite) -> None:
    """The page's S256 transformation gives RFC 7636 Appendix B's challenge."""
    page.goto("/ui/?code=none&state=none")  # stays on the page: the login is refused
    page.wait_for_selector("body[data-ready=true]")

    challenge = page.evaluate(
        "import('./auth.js').then((auth) =>"
        " auth.challengeOf('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'))"
    )

    assert challenge == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
