"""The pages a person opens in a browser, on the same origin as DICOMweb.

* ``/`` redirects to ``/ui/``, the study browser (static HTML, CSS and ES modules kept
  in ``dicomcloud/ui/static``; no build step, nothing from another host);
* ``/api/status``: health and counts for the browser's header;
* ``/viewer/``: the OHIF viewer installed by ``dicomcloud viewer install``, with every
  route of the single-page application answered by its ``index.html``; a page saying
  how to install it when it is not installed.
"""

from __future__ import annotations

import html
import mimetypes
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from dicomcloud import __version__
from dicomcloud.dicomweb.request_context import DICOMWEB_PREFIX, archive_of
from dicomcloud.errors import DicomCloudError
from dicomcloud.ui.viewer_bundle import installed_version

STATIC_DIR = Path(__file__).parent / "static"
VIEWER_MOUNT = "/viewer"
#: The viewer's own pages must be revalidated so that a reinstall shows at once.
_NO_CACHE = {"Cache-Control": "no-cache"}


async def root(request: Request) -> Response:
    """``/``: the study browser."""
    return RedirectResponse("/ui/", status_code=307)


async def status(request: Request) -> Response:
    """Health, counts and the viewer's state for the study browser's header."""
    archive = archive_of(request)
    settings = archive.settings
    checks: dict[str, str] = {}
    for name, ping in (("index", archive.index.ping), ("storage", archive.blobs.ping)):
        try:
            await ping()
            checks[name] = "ok"
        except DicomCloudError as exc:
            checks[name] = exc.reason
    counts = None
    if checks["index"] == "ok":
        levels = await archive.index.count_levels(settings.default_tenant)
        counts = {
            "studies": levels.studies,
            "series": levels.series,
            "instances": levels.instances,
        }
    ready = all(value == "ok" for value in checks.values())
    viewer = installed_version(settings.viewer_dir)
    return JSONResponse(
        {
            "status": "ok" if ready else "unavailable",
            "version": __version__,
            "checks": checks,
            "counts": counts,
            "dicomweb": DICOMWEB_PREFIX,
            "viewer": {"installed": viewer is not None, "version": viewer},
        },
        200 if ready else 503,
        headers=_NO_CACHE,
    )


_NOT_INSTALLED = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Viewer not installed</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/ui/app.css"></head>
<body><main class="notice"><h1>The OHIF viewer is not installed</h1>
<p>Install it once on the server (it is fetched from the npm registry and checked
against the registry's sha512):</p>
<pre>dicomcloud viewer install</pre>
<p>(with the same configuration as the server; it unpacks into <code>{directory}</code>)</p>
<p>then reload this page. The <a href="/ui/">study browser</a> works without it.</p>
</main></body></html>
"""


async def viewer(request: Request) -> Response:
    """``/viewer/...``: a file of the bundle, or the viewer's ``index.html`` for any
    route of the application (``/viewer/viewer/{StudyInstanceUID}``)."""
    directory = archive_of(request).settings.viewer_dir
    if installed_version(directory) is None:
        page = _NOT_INSTALLED.format(directory=html.escape(str(directory)))
        return HTMLResponse(page, 404, headers=_NO_CACHE)
    path: str = request.path_params.get("path", "")
    name = path.rsplit("/", 1)[-1]
    # Only the bundle's own top-level files are served (no traversal, no *.orig).
    if name and not name.startswith(".") and not name.endswith((".orig", ".gz")):
        candidate = directory / name
        if candidate.is_file() and name != "index.html":
            return _file(request, candidate)
    return FileResponse(directory / "index.html", headers=_NO_CACHE)


def _file(request: Request, path: Path) -> Response:
    """``path``, or its precompressed ``.gz`` copy when the client accepts gzip."""
    compressed = path.with_name(path.name + ".gz")
    accepts = request.headers.get("accept-encoding", "")
    if "gzip" in accepts and compressed.is_file():
        media_type, _ = mimetypes.guess_type(path.name)
        return FileResponse(
            compressed,
            media_type=media_type or "application/octet-stream",
            headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
        )
    return FileResponse(path, headers={"Vary": "Accept-Encoding"})


def ui_routes() -> list[BaseRoute]:
    """The study browser, its status resource and the viewer."""
    return [
        Route("/", root, methods=["GET"]),
        Route("/api/status", status, methods=["GET"]),
        Mount("/ui", app=StaticFiles(directory=STATIC_DIR, html=True), name="ui"),
        Route(VIEWER_MOUNT, viewer, methods=["GET"]),
        Route(f"{VIEWER_MOUNT}/{{path:path}}", viewer, methods=["GET"]),
    ]
