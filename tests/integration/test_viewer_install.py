"""``dicomcloud viewer install`` against an npm registry on loopback (the registry's
HTTP API: version document with ``dist.tarball`` and ``dist.integrity``, then the
tarball): verified, unpacked, configured for this server, cached; a tarball that does
not match its integrity is refused and nothing is installed.  OHIF 3 (``@ohif/app``, the
default) is relocated under ``/viewer/``; OHIF v2 (``@ohif/viewer`` 4.12.51) stays
selectable with ``--version``."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomcloud import cli
from dicomcloud.ui.viewer_bundle import (
    ViewerInstallError,
    check_integrity,
    install,
    installed_package,
    installed_version,
)

pytestmark = pytest.mark.timeout(120)

#: The shape of the shipped files (abridged) that the installer rewrites.
INDEX_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
  <script
    src="https://polyfill.io/v3/polyfill.min.js?flags=gated&features=default"></script>
  <title>OHIF Standalone Viewer</title>
</head>
<body>
  <div id="root"></div>
  <script type="text/javascript" src="/app-config.js"></script>
  <script src="/index.umd.js" crossorigin></script>
</body>
</html>
"""
APP_CONFIG = """window.config = {
  // default: '/'
  routerBasename: '/',
  extensions: [],
  servers: {
    dicomWeb: [
      {
        name: 'DCM4CHEE',
        qidoRoot: 'https://server.dcmjs.org/dcm4chee-arc/aets/DCM4CHEE/rs',
      },
    ],
  },
  hotkeys: [],
};
"""
BUNDLE = b"window.OHIFViewer = {};\n"
V2 = "4.12.51"

#: The shape of OHIF 3's ``dist/`` (abridged from @ohif/app 3.13.2) that install rewrites.
OHIF3_INDEX = (
    '<!doctype html><html lang="en"><head><meta name="msapplication-TileImage" '
    'content="/assets/mstile-144x144.png"><script>console.time("scriptToView"),'
    'window.PUBLIC_URL="/"</script><link rel="manifest" href="/manifest.json">'
    '<link rel="icon shortcut" href="/assets/favicon.ico">'
    '<script rel="preload" as="script" src="/app-config.js"></script>'
    '<script rel="preload" as="script" type="module" src="/init-service-worker.js"></script>'
    "<title>OHIF Viewer</title><script>function browserImportFunction(n){return import(n)}"
    'window.PUBLIC_URL="/"</script><script defer src="/app.bundle.0f6159c501addfe9.js">'
    '</script><link href="/app.bundle.css" rel="stylesheet"></head><body>'
    '<div id="root"></div></body></html>'
)
OHIF3_APP = (
    '// webpack/runtime/public_path\n(() => {\n__webpack_require__.p = "/";\n})();\n'
    "const imported = await window.browserImportFunction("
    "'/dicom-microscopy-viewer/dicomMicroscopyViewer.min.js');\n"
)
OHIF3_CSS = "@font-face{src:url(/a34f9d1faa5f3315.woff2) format('woff2')}"
OHIF3 = {
    "package/package.json": b"{}",
    "package/dist/index.html": OHIF3_INDEX.encode(),
    "package/dist/app-config.js": APP_CONFIG.encode(),
    "package/dist/app.bundle.0f6159c501addfe9.js": OHIF3_APP.encode(),
    "package/dist/histogram-worker.bundle.ec5f.js": OHIF3_APP.encode(),
    "package/dist/app.bundle.css": OHIF3_CSS.encode(),
    "package/dist/a34f9d1faa5f3315.woff2": b"wOF2" + bytes(4000),
    "package/dist/37fa160cc3a47cfd.wasm": b"\0asm" + bytes(5000),
    "package/dist/assets/favicon.ico": b"icon",
    "package/dist/ort/ort-wasm.wasm": b"\0asm" + bytes(100),
    "package/dist/silent-refresh.html": b'<script src="https://cdnjs.cloudflare.com/x.js">',
    "package/dist/google.js": b"window.config = {oidc: [{authority: 'https://accounts.google.com'}]}",
    "package/dist/sw.js": b"importScripts('https://storage.googleapis.com/workbox.js')",
    "package/dist/init-service-worker.js": b"navigator.serviceWorker",
    "package/dist/_redirects": b"/* /index.html 200",
    "package/dist/../../escape.txt": b"outside",
}


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


VALID = tarball(
    {
        "package/package.json": b"{}",
        "package/dist/index.html": INDEX_HTML.encode(),
        "package/dist/app-config.js": APP_CONFIG.encode(),
        "package/dist/index.umd.js": BUNDLE,
        "package/dist/../../escape.txt": b"outside",
    }
)


@dataclass
class Registry:
    """An npm registry on loopback serving ``@ohif/viewer`` 4.12.51 (``tarball``) and
    ``@ohif/app`` 3.13.2 (``app_tarball``)."""

    url: str
    tarball: bytes
    integrity: str
    app_tarball: bytes = b""
    app_integrity: str = ""
    hits: list[str] = field(default_factory=list)


def _version_document(name: str, version: str, tarball: str, integrity: str) -> bytes:
    dist = {"tarball": tarball, "integrity": integrity}
    return json.dumps({"name": name, "version": version, "dist": dist}).encode()


@pytest.fixture
def registry() -> Iterator[Registry]:
    app = tarball(OHIF3)
    state = Registry("", VALID, sri(VALID), app, sri(app))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(self.path)
            if self.path == "/@ohif%2Fviewer/4.12.51":
                body = _version_document(
                    "@ohif/viewer", V2, f"{state.url}/viewer-4.12.51.tgz", state.integrity
                )
            elif self.path == "/@ohif%2Fapp/3.13.2":
                body = _version_document(
                    "@ohif/app", "3.13.2", f"{state.url}/app-3.13.2.tgz", state.app_integrity
                )
            elif self.path == "/viewer-4.12.51.tgz":
                body = state.tarball
            elif self.path == "/app-3.13.2.tgz":
                body = state.app_tarball
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_install_unpacks_and_points_the_viewer_at_this_server(
    registry: Registry, tmp_path: Path
) -> None:
    target = tmp_path / "viewer"

    dist = install(target, version=V2, registry=registry.url, cache_dir=tmp_path / "cache")

    assert dist.version == "4.12.51"
    assert installed_version(target) == "4.12.51"
    assert (target / "index.umd.js").read_bytes() == BUNDLE
    assert gzip.decompress((target / "index.umd.js.gz").read_bytes()) == BUNDLE
    assert not (tmp_path / "escape.txt").exists()
    page = (target / "index.html").read_text()
    assert "polyfill.io" not in page
    assert 'src="/viewer/app-config.js"' in page
    assert 'src="/viewer/index.umd.js"' in page
    assert '<link rel="icon" href="data:," />' in page
    config = (target / "app-config.js").read_text()
    assert config.startswith('var DICOMCLOUD_ROOT = new URL("../dicom-web", ')
    assert 'routerBasename: "/viewer",' in config
    assert "qidoRoot: DICOMCLOUD_ROOT," in config
    assert "wadoRoot: DICOMCLOUD_ROOT," in config
    assert "dcm4chee" not in config
    assert "hotkeys: []," in config


def test_a_second_install_uses_the_verified_cached_tarball(
    registry: Registry, tmp_path: Path
) -> None:
    install(tmp_path / "one", version=V2, registry=registry.url, cache_dir=tmp_path / "cache")
    registry.hits.clear()

    install(tmp_path / "two", version=V2, registry=registry.url, cache_dir=tmp_path / "cache")

    assert registry.hits == ["/@ohif%2Fviewer/4.12.51"]
    assert (tmp_path / "two" / "index.umd.js").read_bytes() == BUNDLE


def test_a_tarball_that_does_not_match_its_integrity_is_refused(
    registry: Registry, tmp_path: Path
) -> None:
    registry.tarball = VALID[:-1] + bytes([VALID[-1] ^ 1])

    with pytest.raises(ViewerInstallError, match="does not match its integrity sha512"):
        install(
            tmp_path / "viewer", version=V2, registry=registry.url, cache_dir=tmp_path / "cache"
        )

    assert installed_version(tmp_path / "viewer") is None
    assert list((tmp_path / "cache").glob("*")) == []


def test_a_tarball_without_the_viewer_files_is_refused(registry: Registry, tmp_path: Path) -> None:
    registry.tarball = tarball({"package/dist/index.html": INDEX_HTML.encode()})
    registry.integrity = sri(registry.tarball)

    with pytest.raises(ViewerInstallError, match=r"no package/dist/index\.umd\.js, app-config\.js"):
        install(tmp_path / "viewer", version=V2, registry=registry.url)

    assert not (tmp_path / "viewer").exists()


def test_integrity_strings_name_their_algorithm() -> None:
    check_integrity(b"abc", sri(b"abc"))
    check_integrity(b"abc", "sha1-xyz " + sri(b"abc"))
    with pytest.raises(ViewerInstallError, match="no sha256/384/512"):
        check_integrity(b"abc", "sha1-qZk+NkcGgWq6PiVxeFDCbJzQ2J0=")


def install_command(tmp_path: Path, registry: str, version: str = V2) -> list[str]:
    data, cache = str(tmp_path / "data"), str(tmp_path / "cache")
    return [
        *("viewer", "install", "--data-dir", data, "--registry", registry),
        *("--cache-dir", cache, "--version", version),
    ]


def test_the_command_installs_into_the_data_dir(registry: Registry, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli.app,
        install_command(tmp_path, registry.url),
    )

    assert result.exit_code == 0, result.output
    assert "OHIF viewer 4.12.51 installed" in result.output
    assert installed_version(tmp_path / "data" / "viewer") == "4.12.51"


def test_the_command_says_why_when_the_registry_is_unreachable(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli.app,
        install_command(tmp_path, "http://127.0.0.1:9"),
    )

    assert result.exit_code == 1
    assert "cannot fetch http://127.0.0.1:9/@ohif%2Fviewer/4.12.51" in result.output


def test_the_command_can_point_the_viewer_at_another_dicomweb_root(
    registry: Registry, tmp_path: Path
) -> None:
    command = install_command(tmp_path, registry.url)

    result = CliRunner().invoke(cli.app, [*command, "--dicomweb", "../tenants/acme/dicom-web"])

    assert result.exit_code == 0, result.output
    config = (tmp_path / "data" / "viewer" / "app-config.js").read_text()
    assert config.startswith('var DICOMCLOUD_ROOT = new URL("../tenants/acme/dicom-web", ')


def test_ohif3_is_the_default_and_is_relocated_under_viewer(
    registry: Registry, tmp_path: Path
) -> None:
    target = tmp_path / "viewer"

    dist = install(target, registry=registry.url, cache_dir=tmp_path / "cache")

    assert dist.version == "3.13.2"
    assert installed_version(target) == "3.13.2"
    assert installed_package(target) == "@ohif/app"
    assert not (tmp_path / "escape.txt").exists()
    # Nested files are kept; Google's configuration and the service worker are not.
    assert (target / "assets" / "favicon.ico").read_bytes() == b"icon"
    assert (target / "ort" / "ort-wasm.wasm").is_file()
    for name in ("google.js", "sw.js", "init-service-worker.js", "_redirects"):
        assert not (target / name).exists(), name
    page = (target / "index.html").read_text()
    assert page.count('window.PUBLIC_URL="/viewer/"') == 2
    assert 'src="/viewer/app-config.js"' in page
    assert 'src="/viewer/app.bundle.0f6159c501addfe9.js"' in page
    assert 'href="/viewer/app.bundle.css"' in page
    assert 'content="/viewer/assets/mstile-144x144.png"' in page
    assert "init-service-worker" not in page and "manifest" not in page
    assert '="/a' not in page  # no absolute path left outside /viewer/
    for name in ("app.bundle.0f6159c501addfe9.js", "histogram-worker.bundle.ec5f.js"):
        bundle = (target / name).read_text()
        assert '__webpack_require__.p = "/viewer/";' in bundle
        assert "'/viewer/dicom-microscopy-viewer/dicomMicroscopyViewer.min.js'" in bundle
    assert "url(/viewer/a34f9d1faa5f3315.woff2)" in (target / "app.bundle.css").read_text()
    silent = (target / "silent-refresh.html").read_text()
    assert "cdnjs" not in silent and "source: 'oidc-client'" in silent
    config = (target / "app-config.js").read_text()
    assert config.count('new URL("../dicom-web", ') == 1
    assert 'routerBasename: "/viewer",' in config
    assert "namespace: '@ohif/extension-default.dataSourcesModule.dicomweb'" in config
    assert "qidoRoot: DICOMCLOUD_ROOT," in config and "wadoRoot: DICOMCLOUD_ROOT," in config
    assert "supportsWildcard: true," in config and "bulkDataURI: { enabled: true }," in config
    assert "dcm4chee" not in config.lower()
    # Scripts and WebAssembly are kept gzipped too; small files are not.
    bundle = (target / "app.bundle.0f6159c501addfe9.js").read_bytes()
    assert gzip.decompress((target / "37fa160cc3a47cfd.wasm.gz").read_bytes())[:4] == b"\0asm"
    assert not (target / "app-config.js.gz").exists()
    assert len(bundle) < 2048 and not (target / "assets" / "favicon.ico.gz").exists()


def test_ohif3_for_a_tenant(registry: Registry, tmp_path: Path) -> None:
    command = install_command(tmp_path, registry.url, "3.13.2")

    result = CliRunner().invoke(cli.app, [*command, "--tenant", "acme"])

    assert result.exit_code == 0, result.output
    assert "OHIF viewer 3.13.2 installed" in result.output and "@ohif/app" in result.output
    config = (tmp_path / "data" / "viewer" / "app-config.js").read_text()
    assert 'new URL("../tenants/acme/dicom-web", ' in config
    assert (tmp_path / "cache" / "ohif-app-3.13.2.tgz").is_file()


def test_a_tenant_that_is_no_tenant_id_is_refused(registry: Registry, tmp_path: Path) -> None:
    command = install_command(tmp_path, registry.url, "3.13.2")

    result = CliRunner().invoke(cli.app, [*command, "--tenant", "../x"])

    assert result.exit_code == 2
    assert registry.hits == []
