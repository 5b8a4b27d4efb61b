"""CORS as Chromium enforces it: a page of another origin (a viewer served elsewhere)
may call a server that lists its origin, with a preflighted Authorization header and
the DICOMweb response headers readable, and is blocked by a server that does not."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from conftest import running_server

from .conftest import Site

pytestmark = pytest.mark.timeout(300)

CALL = """async ([url, token]) => {
    try {
        const response = await fetch(url, {
            headers: { Accept: 'application/dicom+json', Authorization: `Bearer ${token}` },
        });
        return {
            status: response.status,
            contentType: response.headers.get('Content-Type'),
            studies: (await response.json()).length,
        };
    } catch (error) {
        return { error: String(error) };
    }
}"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def other_origin(directory: Path) -> Iterator[str]:
    """A page served from another origin than the archive (another port)."""
    (directory / "index.html").write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"><title>elsewhere'
        "</title></head><body>a viewer served elsewhere</body></html>"
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_of_a_listed_origin_may_call_the_server_and_others_are_blocked(
    browser: Browser, site: Site, tmp_path: Path
) -> None:
    with other_origin(tmp_path) as origin:
        env = {"DICOMCLOUD_CORS__ALLOW_ORIGINS": json.dumps([origin])}
        with running_server(tmp_path / "cors-data", env) as server:
            context = browser.new_context()
            console: list[str] = []
            try:
                page = context.new_page()
                page.on("console", lambda m: console.append(m.text))
                page.goto(f"{origin}/index.html")

                allowed = page.evaluate(CALL, [f"{server.dicomweb_url}/studies", "t0ken"])
                blocked = page.evaluate(CALL, [f"{site.base_url}/dicom-web/studies", "t0ken"])
            finally:
                context.close()

    assert allowed == {"status": 200, "contentType": "application/dicom+json", "studies": 0}
    assert "error" in blocked and "Failed to fetch" in blocked["error"]
    assert any("blocked by CORS policy" in line for line in console), console
