"""Fixtures of the real-browser tier: Debian's ``chromium`` driven by Playwright.

* ``site``: ``dicomcloud serve`` with the OHIF viewer installed (``dicomcloud viewer
  install``: OHIF 3, or the version in ``$DICOMCLOUD_TEST_VIEWER``, e.g. ``4.12.51`` for
  OHIF v2; the tarball cached under ``~/.cache/dicomcloud`` so that only the first run
  fetches it) and a small dataset stored over STOW-RS, shared by the session;
* ``page``: a fresh browser page whose every response, failed request and console error
  is recorded; after the test its screenshot is kept under the artefacts directory
  (``$PYTEST_ARTIFACTS`` or ``tests/artifacts``) and the test fails if any request
  failed, answered 4xx/5xx, was blocked by CORS, or went to a host other than the
  server.

Playwright's own browser download is never used: ``executable_path`` is Debian's
``/usr/bin/chromium`` (``scripts/bootstrap.sh test`` installs it).  OHIF 3 draws with
WebGL 2 (cornerstone3D); headless Chromium on a machine without a GPU gets it from
SwiftShader, ANGLE's CPU implementation, with :data:`CHROMIUM_ARGS`.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from pydicom.data import get_charset_files, get_testdata_file

from conftest import DICOMCLOUD, clean_environment, require, running_server
from integration.support import multipart_related

CHROMIUM = Path(os.environ.get("DICOMCLOUD_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(
    os.environ.get("PYTEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts")
)
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dicomcloud"
#: Generous waits for a loaded 2-core machine (milliseconds, Playwright's unit).
WAIT_MS = 60_000


def sample_file(name: str) -> Path:
    return Path(get_testdata_file(name))  # type: ignore[arg-type]


def charset_file(name: str) -> Path:
    return Path(get_charset_files(name)[0])


#: Stored before the tests: a CT, and patients named in German and French.
DATASET = [sample_file("CT_small.dcm"), charset_file("chrGerm.dcm"), charset_file("chrFren.dcm")]


#: The viewer version the browser tests install (empty: the default, OHIF 3).
VIEWER_VERSION = os.environ.get("DICOMCLOUD_TEST_VIEWER", "")
#: Whether that is OHIF v2 (``@ohif/viewer`` 4.x) rather than OHIF 3.
OHIF2 = VIEWER_VERSION.startswith("4.")
INSTALL = [str(DICOMCLOUD), "viewer", "install"] + (
    ["--version", VIEWER_VERSION] if VIEWER_VERSION else []
)
#: --no-sandbox: the tests may run as root in a container.  WebGL 2 without a GPU:
#: ANGLE on SwiftShader (Chromium only allows it with --enable-unsafe-swiftshader since
#: it stopped falling back to it silently), the GPU blocklist ignored.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
]
#: Run before every page's scripts: OHIF 3's first-visit tour (shepherd.js, over the
#: viewport) counts as seen, as it would after a person's first visit.
SEEN_TOUR = "try { localStorage.setItem('shownTours', '[\"basicViewerTour\"]') } catch (e) {}"


@dataclass
class Site:
    base_url: str
    data_dir: Path

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data_dir = tmp_path_factory.mktemp("browser") / "data"
    data_dir.mkdir(parents=True)
    install = subprocess.run(
        [*INSTALL, "--data-dir", str(data_dir), "--cache-dir", str(CACHE)],
        capture_output=True,
        text=True,
        env=clean_environment(),
        timeout=600,
        check=False,
    )
    require(
        install.returncode == 0,
        f"dicomcloud viewer install failed (npm registry unreachable?):\n{install.stderr}",
    )
    with running_server(data_dir) as server:
        body, content_type = multipart_related([path.read_bytes() for path in DATASET])
        stored = httpx.post(
            f"{server.dicomweb_url}/studies",
            content=body,
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
            timeout=120,
        )
        assert stored.status_code == 200, stored.text
        yield Site(server.base_url, data_dir)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium, for one module: Playwright's sync API keeps an event loop running in
    this thread while it is open, which asyncio tests run after it must not see."""
    require(CHROMIUM.exists(), f"{CHROMIUM} is missing (scripts/bootstrap.sh test)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class NetworkLog:
    """What a page asked for and what went wrong."""

    host: str
    requests: list[str] = field(default_factory=list)
    #: Other hosts the page may talk to (the identity provider of a login test).
    other_hosts: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)
    #: (status, URL path) answers a test expects (a refused upload's 409).
    expected: list[tuple[int, str]] = field(default_factory=list)
    #: Path prefixes of this host whose requests a navigation may abort (the viewer's
    #: own files, when it leaves for the identity provider while loading them).
    abortable: tuple[str, ...] = ()

    def expect_status(self, status: int, path: str) -> None:
        self.expected.append((status, path))

    def request(self, url: str) -> None:
        self.requests.append(url)
        parts = urlsplit(url)
        allowed = (self.host, *self.other_hosts)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc not in allowed:
            self.problems.append(f"request to another host: {url}")

    def response(self, status: int, method: str, url: str) -> None:
        if (status, urlsplit(url).path) in self.expected:
            return
        if status >= 400:
            self.problems.append(f"{method} {url} answered {status}")

    def failed(self, url: str, failure: str | None) -> None:
        # A download read as a blob and revoked is no failure; anything else is.
        if url.startswith("blob:"):
            return
        parts = urlsplit(url)
        if (
            failure == "net::ERR_ABORTED"
            and parts.netloc == self.host
            and parts.path.startswith(self.abortable)
        ):
            return
        self.problems.append(f"request failed: {url} ({failure})")

    def console(self, kind: str, text: str) -> None:
        if any(f"status of {status} " in text for status, _ in self.expected):
            return  # Chromium's own line about an expected answer
        if kind == "error" or re.search(r"CORS|Access-Control", text):
            self.problems.append(f"console {kind}: {text}")


@pytest.fixture
def network(site: Site) -> NetworkLog:
    """The network log of ``page``."""
    return NetworkLog(site.host)


@pytest.fixture
def page(
    browser: Browser, site: Site, network: NetworkLog, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A page on the site; the test fails if the network log shows any problem."""
    context = browser.new_context(
        base_url=site.base_url, viewport={"width": 1280, "height": 800}, accept_downloads=True
    )
    context.add_init_script(SEEN_TOUR)
    log = network
    context.on("request", lambda r: log.request(r.url))
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
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        opened.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        (ARTIFACTS / f"{name}.requests.txt").write_text("\n".join(log.requests) + "\n")
        # What closing the page cancels is no problem of the page.
        problems = list(log.problems)
        context.close()
    assert not problems, "\n".join(problems)
