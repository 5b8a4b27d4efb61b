"""OHIF 3 (the npm package ``@ohif/app``, 3.x) served under ``/viewer/`` from its
prebuilt ``dist/``.

``@ohif/app`` ships the production build it was published from: ``index.html``, the
``app.bundle.*.js`` entry, about seventy chunks loaded on demand, web workers, WebAssembly
decoders, ``ort/`` (ONNX Runtime, for the segmentation AI tool) and
``dicom-microscopy-viewer/``.  Its ``engines`` field asks for Node >= 24, but that is for
building it; the ``dist/`` is browser code and needs no Node at all.

It was built for the root of a site, so installing it under ``/viewer/`` rewrites:

* ``index.html``: ``window.PUBLIC_URL`` and every absolute ``/...`` asset path; the
  service worker bootstrap (``init-service-worker.js``, which names a Google CDN) and the
  web app manifest are dropped;
* every ``*.js`` with a webpack runtime: ``__webpack_require__.p = "/"``, the public
  path chunks, workers and ``.wasm`` files are loaded from (a constant of the build, not
  computed from ``PUBLIC_URL``), and the microscopy viewer's absolute import;
* ``*.css``: the absolute ``url(/font.woff2)`` of the bundled font;
* ``silent-refresh.html``: OHIF's own loads ``es5-shim`` from cdnjs and answers in the
  format of the old ``oidc-client``, which ``oidc-client-ts`` (what OHIF 3 uses for the
  code flow) ignores; it is replaced by a page that posts the answer the way
  ``oidc-client-ts``'s ``IFrameWindow`` expects (``{source: "oidc-client", url}``).

``app-config.js`` is written from scratch (:func:`app_config`): one DICOMweb data source,
this server's (``@ohif/extension-default.dataSourcesModule.dicomweb``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

from dicomcloud.errors import ConfigurationError

PACKAGE = "@ohif/app"
DEFAULT_VERSION = "3.13.2"
#: Files of ``package/dist`` not installed: a Google Cloud configuration (with Google's
#: OAuth client), the service worker and its bootstrap (which imports Workbox from
#: storage.googleapis.com), and static hosts' (Netlify, ``serve``) settings.
SKIPPED = frozenset(
    {"google.js", "sw.js", "init-service-worker.js", "_headers", "_redirects", "serve.json"}
)
#: What a usable ``dist/`` must have.
REQUIRED = ("index.html", "app-config.js")
#: Suffixes of static files: a missing one answers 404, not the application's page.
STATIC_SUFFIXES = frozenset(
    {".js", ".mjs", ".css", ".wasm", ".json", ".jsonc", ".map", ".png", ".svg", ".ico",
     ".woff", ".woff2", ".xml", ".webapp", ".onnx", ".html", ".txt"}
)  # fmt: skip
#: Precompressed next to themselves (``.gz``) when larger than this.
COMPRESSIBLE = frozenset({".js", ".mjs", ".css", ".wasm", ".json", ".svg", ".map"})
COMPRESS_MIN_BYTES = 2048

_PUBLIC_PATH = re.compile(r'__webpack_require__\.p = "/";')
_MICROSCOPY = "'/dicom-microscopy-viewer/"
_CSS_URL = re.compile(r"url\(/(?!/)")
_SCRIPT_SW = re.compile(r'<script[^>]*src="/init-service-worker\.js"[^>]*></script>')
_MANIFEST = re.compile(r'<link rel="manifest"[^>]*>')
_ABSOLUTE = re.compile(r'(src|href|content)="/(?!/)')
_OUTSIDE = re.compile(r"(src|href)=\"(https?:)?//")

SILENT_REFRESH = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Signing in</title><link rel="icon" href="data:,"></head>
<body>
<script>
  // dicomcloud: hand the provider's answer to oidc-client-ts in the viewer (IFrameWindow)
  window.parent.postMessage(
    { source: 'oidc-client', url: window.location.href, keepOpen: false },
    window.location.origin
  );
</script>
</body>
</html>
"""


def wanted(name: str) -> bool:
    """Whether the tarball member ``package/dist/{name}`` is installed: a relative path
    with no ``..`` and no hidden part, not one of :data:`SKIPPED`."""
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts:
        return False
    if any(part in ("", ".", "..") or part.startswith(".") for part in path.parts):
        return False
    return name not in SKIPPED


def index_html(shipped: str, mount: str) -> str:
    """``index.html`` loading everything from ``mount``, nothing from another host."""
    prefix = mount.rstrip("/") + "/"
    page = _SCRIPT_SW.sub("", shipped)
    page = _MANIFEST.sub("", page)
    page = page.replace('window.PUBLIC_URL="/"', f"window.PUBLIC_URL={json.dumps(prefix)}")
    page = _ABSOLUTE.sub(lambda m: f'{m.group(1)}="{prefix}', page)
    if _OUTSIDE.search(page):
        raise ConfigurationError("index.html still loads something from another host")
    if f"window.PUBLIC_URL={json.dumps(prefix)}" not in page:
        raise ConfigurationError("index.html does not set window.PUBLIC_URL")
    return page


def script(shipped: str, mount: str) -> str:
    """A bundle whose webpack public path and absolute imports are under ``mount``."""
    prefix = mount.rstrip("/") + "/"
    text = _PUBLIC_PATH.sub(f"__webpack_require__.p = {json.dumps(prefix)};", shipped)
    return text.replace(_MICROSCOPY, f"'{prefix}dicom-microscopy-viewer/")


def stylesheet(shipped: str, mount: str) -> str:
    """A stylesheet whose absolute ``url(/...)`` are under ``mount``."""
    return _CSS_URL.sub(f"url({mount.rstrip('/')}/", shipped)


def relocate(target: Path, mount: str) -> None:
    """Rewrite the unpacked ``dist/`` in ``target`` for ``mount`` (run once, right after
    unpacking)."""
    for path in sorted(target.iterdir()):
        if not path.is_file():
            continue
        if path.suffix == ".js" and path.name != "app-config.js":
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
            if "__webpack_require__.p" in text or _MICROSCOPY in text:
                rewritten = script(text, mount)
                if rewritten != text:
                    path.write_text(rewritten, encoding="utf-8", errors="surrogateescape")
        elif path.suffix == ".css":
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
            path.write_text(stylesheet(text, mount), encoding="utf-8", errors="surrogateescape")
    index = target / "index.html"
    index.write_text(index_html(index.read_text(encoding="utf-8"), mount), encoding="utf-8")
    (target / "silent-refresh.html").write_text(SILENT_REFRESH, encoding="utf-8")


def app_config(mount: str, dicomweb: str, name: str) -> str:
    """``app-config.js``: OHIF 3 under ``mount`` with one DICOMweb data source.

    ``dicomweb`` is the DICOMweb root relative to the viewer's mount (``../dicom-web``)
    or absolute; the browser resolves it against the script's own URL, so the
    configuration holds behind a proxy.  The investigational-use notice is not shown
    (it is the deployer's choice, and here a dialog over every first visit).
    """
    root = (
        "new URL("
        + json.dumps(dicomweb)
        + ", document.currentScript ? document.currentScript.src : window.location.href)"
        ".href.replace(/\\/$/, '')"
    )
    return f"""// dicomcloud: OHIF 3 at {mount}/, reading this server's DICOMweb service
var DICOMCLOUD_ROOT = {root};
window.config = {{
  name: 'dicomcloud',
  routerBasename: {json.dumps(mount)},
  extensions: [],
  modes: [],
  customizationService: {{}},
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  groupEnabledModesFirst: true,
  investigationalUseDialog: {{ option: 'never' }},
  maxNumRequests: {{ interaction: 100, thumbnail: 5, prefetch: 25 }},
  showErrorDetails: 'always',
  defaultDataSourceName: 'dicomcloud',
  dataSources: [
    {{
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'dicomcloud',
      configuration: {{
        friendlyName: {json.dumps(name)},
        name: {json.dumps(name)},
        wadoUriRoot: DICOMCLOUD_ROOT + '/wado',
        qidoRoot: DICOMCLOUD_ROOT,
        wadoRoot: DICOMCLOUD_ROOT,
        qidoSupportsIncludeField: true,
        supportsReject: false,
        dicomUploadEnabled: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        staticWado: false,
        bulkDataURI: {{ enabled: true }},
        omitQuotationForMultipartRequest: true,
      }},
    }},
  ],
}};
"""


def oidc_block(client: dict[str, object]) -> str:
    """The ``oidc`` array of OHIF 3's configuration for the oidc-client-ts settings
    ``client``: OHIF 3 takes the code flow with PKCE (``oidc-client-ts``) when
    ``response_type`` is ``code``; ``silent_redirect_uri`` is the page written by
    :func:`relocate`.

    ``post_logout_redirect_uri`` is the study browser (``../ui/`` from the viewer,
    absolute): OHIF 3 mounts its sign-out callback on the *path* of that URI inside its
    router, so the default ``/`` (``/viewer/``) becomes the route ``/viewer/viewer``,
    the study viewer's own, whose every visit then "completes a sign-out" and
    navigates to ``?`` + a search that already starts with ``?`` (``??``, ``???``...).
    """
    settings = {key: value for key, value in client.items() if key != "post_logout_redirect_uri"}
    settings["silent_redirect_uri"] = "/silent-refresh.html"
    return (
        "\n// dicomcloud: log in at the archive's identity provider\nwindow.config.oidc = ["
        + json.dumps(settings)
        + "];\nwindow.config.oidc[0].post_logout_redirect_uri = new URL('../ui/', "
        "document.currentScript ? document.currentScript.src : window.location.href).href;\n"
    )
