"""``dicomcloud viewer install``: a prebuilt OHIF viewer from the npm registry.

Two packages are known, chosen by the version asked for:

* ``@ohif/app`` 3.x (OHIF 3, the default, :mod:`dicomcloud.ui.ohif3`): the prebuilt
  ``dist/`` of the current viewer, relocated under ``/viewer/``;
* ``@ohif/viewer`` 4.x (OHIF v2, ``--version 4.12.51``), described below.

The npm package ``@ohif/viewer`` (OHIF v2, 4.x releases) ships ``dist/index.html``,
``dist/index.umd.js`` and ``dist/app-config.js``: a complete viewer that needs no build.
It is fetched, checked against the registry's Subresource Integrity string
(``dist.integrity``, sha512), unpacked into the viewer directory and configured for this
server: its DICOMweb roots are computed in the browser relative to where the viewer is
served (so it works behind a reverse proxy), the router runs under ``/viewer`` and the
``polyfill.io`` script (an outside host, and one a modern browser does not need) is
removed, so that nothing loads from the internet.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dicomcloud.errors import ConfigurationError
from dicomcloud.ui import ohif3

#: OHIF v2's standalone viewer (the 4.x versions of ``@ohif/viewer``).
PACKAGE = "@ohif/viewer"
OHIF2_VERSION = "4.12.51"
#: The version installed when none is asked for: OHIF 3 (``@ohif/app``).
DEFAULT_VERSION = ohif3.DEFAULT_VERSION
DEFAULT_REGISTRY = "https://registry.npmjs.org"
#: Files of ``package/dist`` the viewer consists of.
BUNDLE_FILES = ("index.html", "index.umd.js", "app-config.js")
#: Written next to the bundle: which package and version is installed.
MARKER = "dicomcloud-viewer.json"
_TIMEOUT = 120.0


class ViewerInstallError(ConfigurationError):
    """The viewer could not be fetched, verified or unpacked (the reason says why)."""


@dataclass(frozen=True)
class Distribution:
    """Where a package version's tarball is and the integrity string it must match."""

    version: str
    tarball: str
    integrity: str


def _get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/json, */*"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            body: bytes = response.read()
            return body
    except OSError as exc:  # URLError, HTTPError and socket errors
        raise ViewerInstallError(f"cannot fetch {url}: {exc}") from exc


def package_of(version: str) -> str:
    """The npm package a viewer version is published as: ``@ohif/viewer`` for OHIF v2's
    4.x releases, ``@ohif/app`` for OHIF 3 (3.x)."""
    return PACKAGE if version.split(".", 1)[0] == "4" else ohif3.PACKAGE


def distribution(registry: str, version: str) -> Distribution:
    """The registry's ``dist`` record of the viewer package of ``version``."""
    name = urllib.parse.quote(package_of(version), safe="@")  # npm wants @scope%2fname
    url = f"{registry.rstrip('/')}/{name}/{urllib.parse.quote(version)}"
    try:
        document = json.loads(_get(url))
        dist = document["dist"]
        return Distribution(str(document["version"]), str(dist["tarball"]), dist["integrity"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ViewerInstallError(f"{url}: not an npm version document ({exc})") from exc


def check_integrity(data: bytes, integrity: str) -> None:
    """Raise unless ``data`` matches the Subresource Integrity string ``integrity``
    (W3C SRI: ``sha512-<base64>``, several hashes separated by spaces)."""
    for item in integrity.split():
        algorithm, _, expected = item.partition("-")
        if algorithm in ("sha512", "sha384", "sha256"):
            actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
            if actual == expected:
                return
            raise ViewerInstallError(
                f"the tarball does not match its integrity {algorithm} "
                f"(expected {expected}, got {actual})"
            )
    raise ViewerInstallError(f"no sha256/384/512 hash in integrity {integrity!r}")


def fetch_tarball(dist: Distribution, cache_dir: Path | None) -> bytes:
    """The verified tarball, from ``cache_dir`` when a verified copy is there."""
    stem = package_of(dist.version).replace("@", "").replace("/", "-")
    cached = cache_dir / f"{stem}-{dist.version}.tgz" if cache_dir else None
    if cached is not None and cached.is_file():
        data = cached.read_bytes()
        try:
            check_integrity(data, dist.integrity)
            return data
        except ViewerInstallError:
            cached.unlink()  # a corrupt copy is fetched again
    data = _get(dist.tarball)
    check_integrity(data, dist.integrity)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(cached)
    return data


def unpack(data: bytes, target: Path, package: str = PACKAGE) -> None:
    """Extract ``package/dist/*`` of the tarball into ``target`` (replacing it): the
    top-level files for OHIF v2, the whole tree but :data:`ohif3.SKIPPED` for OHIF 3."""
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tree = package == ohif3.PACKAGE
    required = ohif3.REQUIRED if tree else BUNDLE_FILES
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive.getmembers():
                name = member.name.removeprefix("package/dist/")
                if name == member.name or not member.isfile():
                    continue
                if not (ohif3.wanted(name) if tree else "/" not in name):
                    continue
                source = archive.extractfile(member)
                if source is None or name.startswith("."):
                    continue
                destination = staging / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(source.read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ViewerInstallError(f"cannot unpack the viewer tarball: {exc}") from exc
    missing = [name for name in required if not (staging / name).is_file()]
    if missing:
        shutil.rmtree(staging, ignore_errors=True)
        raise ViewerInstallError(f"the tarball has no package/dist/{', '.join(missing)}")
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)


#: ``servers: { dicomWeb: [ ... ] },`` of the shipped app-config.js.
_SERVERS = re.compile(r"^  servers: \{\n.*?^  \},\n", re.DOTALL | re.MULTILINE)
_ROUTER = re.compile(r"^  routerBasename: '[^']*',", re.MULTILINE)
_POLYFILL = re.compile(r"\s*<script\s+src=\"https?://polyfill\.io/[^\"]*\"></script>")


def app_config(shipped: str, mount: str, dicomweb: str, name: str) -> str:
    """``app-config.js`` pointing at this server.

    ``dicomweb`` is the DICOMweb root relative to the viewer's mount (``../dicom-web``):
    the browser resolves it against the script's own URL, so the configuration holds
    behind a proxy that adds a path prefix.
    """
    root = (
        "new URL("
        + json.dumps(dicomweb)
        + ", document.currentScript ? document.currentScript.src : window.location.href)"
        ".href.replace(/\\/$/, '')"
    )
    servers = (
        "  servers: {\n"
        "    dicomWeb: [\n"
        "      {\n"
        f"        name: {json.dumps(name)},\n"
        "        wadoUriRoot: DICOMCLOUD_ROOT + '/wado',\n"
        "        qidoRoot: DICOMCLOUD_ROOT,\n"
        "        wadoRoot: DICOMCLOUD_ROOT,\n"
        "        qidoSupportsIncludeField: true,\n"
        "        imageRendering: 'wadors',\n"
        "        thumbnailRendering: 'wadors',\n"
        "        enableStudyLazyLoad: true,\n"
        "        supportsFuzzyMatching: true,\n"
        "      },\n"
        "    ],\n"
        "  },\n"
    )
    config, count = _SERVERS.subn(servers, shipped, count=1)
    config, routers = _ROUTER.subn(f"  routerBasename: {json.dumps(mount)},", config, count=1)
    if count != 1 or routers != 1:
        raise ViewerInstallError("app-config.js has no servers/routerBasename block to set")
    return f"var DICOMCLOUD_ROOT = {root};\n{config}"


def index_html(shipped: str, mount: str) -> str:
    """``index.html`` loading its scripts from ``mount``, nothing from outside."""
    page = _POLYFILL.sub("", shipped)
    # No favicon in the bundle: an empty one spares the browser a request that fails.
    page = page.replace("<title>", '<link rel="icon" href="data:," />\n  <title>', 1)
    for name in ("app-config.js", "index.umd.js"):
        page = page.replace(f'src="/{name}"', f'src="{mount}/{name}"')
    if re.search(r"(src|href)=\"(https?:)?//", page):
        raise ViewerInstallError("index.html still loads something from another host")
    return page


def configure(
    target: Path,
    *,
    mount: str,
    dicomweb: str,
    name: str = "dicomcloud",
    package: str | None = None,
) -> None:
    """Point the viewer in ``target`` at ``dicomweb``.  OHIF 3: write ``app-config.js``
    (its pages and bundles were relocated once at install).  OHIF v2: rewrite the
    shipped ``app-config.js`` and ``index.html`` in place (from the pristine copies
    kept as ``*.orig``, so it may run again).  ``package`` defaults to the installed
    one's."""
    if (package or installed_package(target)) == ohif3.PACKAGE:
        config = ohif3.app_config(mount, dicomweb, name)
        (target / "app-config.js").write_text(config, encoding="utf-8")
        return
    for file_name in ("app-config.js", "index.html"):
        path = target / file_name
        original = target / f"{file_name}.orig"
        if not original.exists():
            shutil.copyfile(path, original)
        shipped = original.read_text(encoding="utf-8")
        if file_name == "index.html":
            rewritten = index_html(shipped, mount)
        else:
            rewritten = app_config(shipped, mount, dicomweb, name)
        path.write_text(rewritten, encoding="utf-8")


def precompress(path: Path, level: int = 9) -> None:
    """Keep ``path.gz`` next to ``path`` (the 12 MB bundle is about 3 MB gzipped) for
    clients that accept gzip."""
    compressed = path.with_name(path.name + ".gz")
    with path.open("rb") as source, gzip.open(compressed, "wb", compresslevel=level) as out:
        shutil.copyfileobj(source, out)


def precompress_tree(target: Path) -> None:
    """Precompress OHIF 3's scripts, stylesheets and WebAssembly (gzip level 6: the
    tree is about 200 MB; level 9 costs much more time for little)."""
    for path in target.rglob("*"):
        if (
            path.is_file()
            and path.suffix in ohif3.COMPRESSIBLE
            and path.name != "app-config.js"
            and path.stat().st_size > ohif3.COMPRESS_MIN_BYTES
        ):
            precompress(path, level=6)


def install(
    target: Path,
    *,
    version: str = DEFAULT_VERSION,
    registry: str = DEFAULT_REGISTRY,
    cache_dir: Path | None = None,
    mount: str = "/viewer",
    dicomweb: str = "../dicom-web",
) -> Distribution:
    """Fetch, verify, unpack and configure the viewer of ``version`` into ``target``."""
    package = package_of(version)
    dist = distribution(registry, version)
    unpack(fetch_tarball(dist, cache_dir), target, package)
    if package == ohif3.PACKAGE:
        try:
            ohif3.relocate(target, mount)
        except (ConfigurationError, OSError, UnicodeDecodeError) as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise ViewerInstallError(f"cannot relocate OHIF under {mount}/: {exc}") from exc
        configure(target, mount=mount, dicomweb=dicomweb, package=package)
        precompress_tree(target)
    else:
        configure(target, mount=mount, dicomweb=dicomweb, package=package)
        precompress(target / "index.umd.js")
    marker = {"package": package, "version": dist.version, "integrity": dist.integrity}
    (target / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return dist


def _marker(target: Path) -> dict[str, str] | None:
    try:
        marker = json.loads((target / MARKER).read_text(encoding="utf-8"))
        # Markers written before OHIF 3 was supported name no package: OHIF v2's.
        return {"version": str(marker["version"]), "package": str(marker.get("package", PACKAGE))}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def installed_version(target: Path) -> str | None:
    """The installed viewer's version, or None when none is installed."""
    marker = _marker(target)
    return marker["version"] if marker else None


def installed_package(target: Path) -> str | None:
    """The installed viewer's npm package (``@ohif/app`` or ``@ohif/viewer``), or None."""
    marker = _marker(target)
    return marker["package"] if marker else None
