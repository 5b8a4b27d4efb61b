"""``dicomcloud viewer install`` against an npm registry on loopback (the registry's
HTTP API: version document with ``dist.tarball`` and ``dist.integrity``, then the
tarball): verified, unpacked, configured for this server, cached; a tarball that does
not match its integrity is refused and nothing is installed."""

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
    """An npm registry on loopback serving one package version."""

    url: str
    tarball: bytes
    integrity: str
    hits: list[str] = field(default_factory=list)


@pytest.fixture
def registry() -> Iterator[Registry]:
    state = Registry("", VALID, sri(VALID))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(self.path)
            if self.path == "/@ohif%2Fviewer/4.12.51":
                body = json.dumps(
                    {
                        "name": "@ohif/viewer",
                        "version": "4.12.51",
                        "dist": {
                            "tarball": f"{state.url}/viewer-4.12.51.tgz",
                            "integrity": state.integrity,
                        },
                    }
                ).encode()
            elif self.path == "/viewer-4.12.51.tgz":
                body = state.tarball
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

    dist = install(target, registry=registry.url, cache_dir=tmp_path / "cache")

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
    install(tmp_path / "one", registry=registry.url, cache_dir=tmp_path / "cache")
    registry.hits.clear()

    install(tmp_path / "two", registry=registry.url, cache_dir=tmp_path / "cache")

    assert registry.hits == ["/@ohif%2Fviewer/4.12.51"]
    assert (tmp_path / "two" / "index.umd.js").read_bytes() == BUNDLE


def test_a_tarball_that_does_not_match_its_integrity_is_refused(
    registry: Registry, tmp_path: Path
) -> None:
    registry.tarball = VALID[:-1] + bytes([VALID[-1] ^ 1])

    with pytest.raises(ViewerInstallError, match="does not match its integrity sha512"):
        install(tmp_path / "viewer", registry=registry.url, cache_dir=tmp_path / "cache")

    assert installed_version(tmp_path / "viewer") is None
    assert list((tmp_path / "cache").glob("*")) == []


def test_a_tarball_without_the_viewer_files_is_refused(registry: Registry, tmp_path: Path) -> None:
    registry.tarball = tarball({"package/dist/index.html": INDEX_HTML.encode()})
    registry.integrity = sri(registry.tarball)

    with pytest.raises(ViewerInstallError, match=r"no package/dist/index\.umd\.js, app-config\.js"):
        install(tmp_path / "viewer", registry=registry.url)

    assert not (tmp_path / "viewer").exists()


def test_integrity_strings_name_their_algorithm() -> None:
    check_integrity(b"abc", sri(b"abc"))
    check_integrity(b"abc", "sha1-xyz " + sri(b"abc"))
    with pytest.raises(ViewerInstallError, match="no sha256/384/512"):
        check_integrity(b"abc", "sha1-qZk+NkcGgWq6PiVxeFDCbJzQ2J0=")


def install_command(tmp_path: Path, registry: str) -> list[str]:
    data, cache = str(tmp_path / "data"), str(tmp_path / "cache")
    return ["viewer", "install", "--data-dir", data, "--registry", registry, "--cache-dir", cache]


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
