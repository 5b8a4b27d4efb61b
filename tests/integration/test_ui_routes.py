"""The pages served next to DICOMweb: ``/`` -> the study browser, its static files,
``/api/status`` (health, counts, whether deletion is allowed), and ``/viewer/`` (the
installed OHIF bundle with a fallback to its page for the application's routes, or how
to install it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ArchiveFactory, LocalArchive
from dicomcloud.ui.viewer_bundle import MARKER, precompress
from integration.support import new_instance

pytestmark = pytest.mark.timeout(120)


async def test_root_redirects_to_the_study_browser(local: LocalArchive) -> None:
    response = await local.client.get("/")

    assert response.status_code == 307
    assert response.headers["location"] == "/ui/"


async def test_the_study_browser_is_served_with_its_modules(local: LocalArchive) -> None:
    page = await local.client.get("/ui/")
    script = await local.client.get("/ui/app.js")
    api = await local.client.get("/ui/api.js")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js"></script>' in page.text
    assert script.status_code == api.status_code == 200
    assert "javascript" in script.headers["content-type"]
    # Nothing is loaded from another host.
    for text in (page.text, script.text, api.text):
        assert "http://" not in text and "https://" not in text


async def test_status_counts_studies_series_and_instances(local: LocalArchive) -> None:
    empty = (await local.client.get("/api/status")).json()
    one, two = new_instance(), new_instance()
    other_series = new_instance(study=one.study)
    stored = await local.stow([one.data, two.data, other_series.data])
    assert stored.status_code == 200, stored.text

    response = await local.client.get("/api/status")

    assert empty["counts"] == {"studies": 0, "series": 0, "instances": 0}
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"index": "ok", "storage": "ok"}
    assert body["counts"] == {"studies": 2, "series": 3, "instances": 3}
    assert body["viewer"] == {"installed": False, "version": None}
    assert body["dicomweb"] == "/dicom-web"
    assert body["allow_delete"] is True


async def test_status_says_whether_deletion_is_allowed(make_archive: ArchiveFactory) -> None:
    """The study browser hides its Delete buttons when DELETE would answer 405."""
    local = await make_archive(retention__allow_delete=False)
    one = new_instance()
    assert (await local.stow([one.data])).status_code == 200

    status = (await local.client.get("/api/status")).json()
    refused = await local.client.delete(f"/dicom-web/studies/{one.study}")

    assert status["allow_delete"] is False
    assert refused.status_code == 405


async def test_viewer_not_installed_says_how_to_install_it(local: LocalArchive) -> None:
    response = await local.client.get("/viewer/viewer/1.2.3")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "dicomcloud viewer install" in response.text
    assert str(local.data_dir / "viewer") in response.text


def fake_bundle(directory: Path) -> None:
    directory.mkdir(parents=True)
    (directory / "index.html").write_text("<html>viewer page</html>")
    (directory / "index.html.orig").write_text("<html>shipped page</html>")
    (directory / "index.umd.js").write_text("window.OHIFViewer = {};")
    (directory / "app-config.js").write_text("window.config = {};")
    (directory / MARKER).write_text(json.dumps({"version": "4.12.51"}))


async def test_viewer_files_and_routes_are_served(make_archive: ArchiveFactory) -> None:
    local = await make_archive()
    fake_bundle(local.data_dir / "viewer")

    script = await local.client.get("/viewer/index.umd.js")
    nested = await local.client.get("/viewer/viewer/app-config.js")
    route = await local.client.get("/viewer/viewer/1.2.840.1")
    root = await local.client.get("/viewer/")
    original = await local.client.get("/viewer/index.html.orig")
    traversal = await local.client.get("/viewer/..%2F..%2Fetc%2Fpasswd")
    status = (await local.client.get("/api/status")).json()

    assert script.status_code == 200 and script.text == "window.OHIFViewer = {};"
    assert nested.status_code == 200 and nested.text == "window.config = {};"
    for page in (route, root, original, traversal):
        assert page.status_code == 200
        assert page.text == "<html>viewer page</html>"
        assert page.headers["cache-control"] == "no-cache"
    assert status["viewer"] == {"installed": True, "version": "4.12.51"}


async def test_the_bundle_is_sent_gzipped_to_clients_that_accept_it(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive()
    fake_bundle(local.data_dir / "viewer")
    precompress(local.data_dir / "viewer" / "index.umd.js")

    gzipped = await local.client.get("/viewer/index.umd.js", headers={"Accept-Encoding": "gzip"})
    plain = await local.client.get("/viewer/index.umd.js", headers={"Accept-Encoding": ""})
    direct = await local.client.get("/viewer/index.umd.js.gz")

    assert gzipped.status_code == 200
    assert gzipped.headers["content-encoding"] == "gzip"
    assert "javascript" in gzipped.headers["content-type"]
    assert gzipped.text == "window.OHIFViewer = {};"  # httpx decodes it
    assert "content-encoding" not in plain.headers
    assert plain.text == "window.OHIFViewer = {};"
    assert direct.text == "<html>viewer page</html>"


async def test_viewer_dir_is_configurable(make_archive: ArchiveFactory, tmp_path: Path) -> None:
    local = await make_archive(viewer__dir=str(tmp_path / "elsewhere"))
    fake_bundle(tmp_path / "elsewhere")

    response = await local.client.get("/viewer/")

    assert response.status_code == 200
    assert response.text == "<html>viewer page</html>"


def fake_ohif3(directory: Path) -> None:
    """The shape of an installed OHIF 3 tree (``@ohif/app``)."""
    (directory / "assets").mkdir(parents=True)
    (directory / "index.html").write_text("<html>ohif 3 page</html>")
    (directory / "app.bundle.1234.js").write_text('__webpack_require__.p = "/viewer/";')
    (directory / "app-config.js").write_text("window.config = {};")
    (directory / "0ddf166f7a343eda.wasm").write_bytes(b"\0asm\1\0\0\0")
    (directory / "assets" / "favicon.ico").write_bytes(b"icon")
    (directory / "silent-refresh.html").write_text("<html>silent</html>")
    marker = {"package": "@ohif/app", "version": "3.13.2"}
    (directory / MARKER).write_text(json.dumps(marker))


async def test_ohif3_files_nested_files_and_routes_are_served(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive()
    fake_ohif3(local.data_dir / "viewer")

    script = await local.client.get("/viewer/app.bundle.1234.js")
    wasm = await local.client.get("/viewer/0ddf166f7a343eda.wasm")
    icon = await local.client.get("/viewer/assets/favicon.ico")
    silent = await local.client.get("/viewer/silent-refresh.html")
    routes = [await local.client.get(path) for path in ("/viewer", "/viewer/", "/viewer/callback")]
    study = await local.client.get("/viewer/viewer?StudyInstanceUIDs=1.2.840.1")
    missing = await local.client.get("/viewer/9999.bundle.abc.js")
    traversal = await local.client.get("/viewer/assets/..%2F..%2F..%2Fetc%2Fpasswd")
    status = (await local.client.get("/api/status")).json()

    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
    assert icon.status_code == 200 and icon.content == b"icon"
    assert silent.text == "<html>silent</html>"
    assert silent.headers["cache-control"] == "no-cache"
    for page in (*routes, study):
        assert page.status_code == 200
        assert page.text == "<html>ohif 3 page</html>"
        assert page.headers["cache-control"] == "no-cache"
    # A chunk that is not there is an error, not the application's page.
    assert missing.status_code == 404
    assert traversal.status_code in (200, 404) and "root:" not in traversal.text
    assert status["viewer"] == {"installed": True, "version": "3.13.2"}


async def test_ohif3_takes_the_ohif_v2_study_route_to_its_own(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive()
    fake_ohif3(local.data_dir / "viewer")

    response = await local.client.get("/viewer/viewer/1.2.840.1")

    assert response.status_code == 302
    assert response.headers["location"] == "../viewer?StudyInstanceUIDs=1.2.840.1"
