"""The pages a person opens in a browser, on the same origin as DICOMweb.

* ``/`` redirects to ``/ui/``, the study browser (static HTML, CSS and ES modules kept
  in ``dicomcloud/ui/static``; no build step, nothing from another host);
* ``/api/status``: health and counts for the browser's header;
* ``/api/auth-config``: whether and where the pages log in (``security.browser_login``),
  open to anyone like the pages themselves;
* ``/viewer/``: the OHIF viewer installed by ``dicomcloud viewer install`` (OHIF 3 or
  OHIF v2), with every route of the single-page application answered by its
  ``index.html``; a page saying how to install it when it is not installed.  When the
  pages log in, its ``app-config.js`` gets an ``oidc`` block (authorization code with
  PKCE: oidc-client-ts in OHIF 3, oidc-client in OHIF v2) for the same provider and
  client.  OHIF 3 opens a study at ``/viewer/viewer?StudyInstanceUIDs={uid}``; the
  OHIF v2 form ``/viewer/viewer/{uid}`` (the study browser's link) is redirected there.
"""

from __future__ import annotations

import asyncio
import html
import json
import mimetypes
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from dicomcloud import __version__
from dicomcloud.dicomweb.request_context import DICOMWEB_PREFIX, archive_of
from dicomcloud.errors import DicomCloudError
from dicomcloud.security.browser_login import ProviderMetadata, browser_config
from dicomcloud.ui import ohif3
from dicomcloud.ui.viewer_bundle import installed_package, installed_version

STATIC_DIR = Path(__file__).parent / "static"
VIEWER_MOUNT = "/viewer"
#: The pages' login configuration (open to anyone: it holds no secret).
AUTH_CONFIG = "/api/auth-config"
#: The viewer's own pages must be revalidated so that a reinstall shows at once.
_NO_CACHE = {"Cache-Control": "no-cache"}


async def root(request: Request) -> Response:
    """``/``: the study browser."""
    return RedirectResponse("/ui/", status_code=307)


async def status(request: Request) -> Response:
    """Health, counts, the viewer's state and whether deletion is allowed, for the study
    browser."""
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
            # Whether DELETE is accepted ([retention] allow_delete); the browser hides
            # its Delete buttons otherwise (the permission is checked per request).
            "allow_delete": settings.retention.allow_delete,
        },
        200 if ready else 503,
        headers=_NO_CACHE,
    )


def _provider_metadata(request: Request) -> ProviderMetadata:
    """The app's cache of the identity provider's discovery document."""
    state = request.app.state
    metadata: ProviderMetadata | None = getattr(state, "provider_metadata", None)
    if metadata is None:
        metadata = ProviderMetadata(archive_of(request).settings.auth)
        state.provider_metadata = metadata
    return metadata


async def auth_config(request: Request) -> Response:
    """``/api/auth-config``: how the pages log in (``browser_config``); 503 when the
    identity provider's endpoints cannot be found."""
    settings = archive_of(request).settings.auth
    try:
        config = await browser_config(settings, _provider_metadata(request))
    except DicomCloudError as exc:
        return JSONResponse(
            {"status": exc.http_status, "error": exc.reason}, exc.http_status, headers=_NO_CACHE
        )
    return JSONResponse(config, headers=_NO_CACHE)


def oidc_client(config: dict[str, object]) -> dict[str, object]:
    """The viewer's ``UserManager`` settings (oidc-client in OHIF v2, oidc-client-ts in
    OHIF 3, which read the same names) for ``config``, the pages' login configuration.
    ``response_type: 'code'`` makes both use PKCE; the provider metadata is given so
    that they need no discovery request; the user info endpoint is not asked (the
    access token is the archive's, which a provider may refuse there)."""
    metadata = {"issuer": config["issuer"]}
    for name in ("authorization_endpoint", "token_endpoint", "end_session_endpoint", "jwks_uri"):
        if config.get(name):
            metadata[name] = config[name]
    client = {
        "authority": config["issuer"],
        "client_id": config["client_id"],
        "redirect_uri": "/callback",
        "post_logout_redirect_uri": "/",
        "response_type": "code",
        "scope": config["scope"],
        "loadUserInfo": False,
        "extraQueryParams": config["authorize_params"],
        "metadata": metadata,
    }
    return client


def viewer_oidc(config: dict[str, object]) -> str:
    """The ``oidc`` block of OHIF v2's app configuration for ``config``."""
    client = oidc_client(config)
    return (
        "\n// dicomcloud: log in at the archive's identity provider\nwindow.config.oidc = ["
        + json.dumps(client)
        + "];\n"
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
    package = installed_package(directory)
    if installed_version(directory) is None:
        page = _NOT_INSTALLED.format(directory=html.escape(str(directory)))
        return HTMLResponse(page, 404, headers=_NO_CACHE)
    path: str = request.path_params.get("path", "")
    if package == ohif3.PACKAGE:
        return await _ohif3(request, directory, path)
    name = path.rsplit("/", 1)[-1]
    # Only the bundle's own top-level files are served (no traversal, no *.orig).
    if name and not name.startswith(".") and not name.endswith((".orig", ".gz")):
        candidate = directory / name
        if candidate.is_file() and name != "index.html":
            if name == "app-config.js":
                return await _app_config(request, candidate)
            return _file(request, candidate)
    return FileResponse(directory / "index.html", headers=_NO_CACHE)


#: OHIF v2's study route, ``viewer/{StudyInstanceUID}``.
_V2_STUDY = re.compile(r"^viewer/([0-9.]{1,64})$")


async def _ohif3(request: Request, directory: Path, path: str) -> Response:
    """A file of OHIF 3's tree (``assets/``, ``ort/``...), 404 for a missing one with a
    static file's suffix, else the application's page for its routes."""
    study = _V2_STUDY.match(path)
    if study:
        # Relative, like the study browser's link to it.
        return RedirectResponse(f"../viewer?StudyInstanceUIDs={study.group(1)}", 302)
    parts = [part for part in path.split("/") if part]
    if parts and all(ohif3.wanted(part) for part in parts) and not path.endswith((".gz",)):
        candidate = directory.joinpath(*parts)
        if parts != ["index.html"] and candidate.is_file():
            if parts == ["app-config.js"]:
                return await _app_config(request, candidate, ohif3.PACKAGE)
            headers = _NO_CACHE if candidate.suffix == ".html" else None
            return _file(request, candidate, headers)
        if Path(parts[-1]).suffix in ohif3.STATIC_SUFFIXES and parts != ["index.html"]:
            return JSONResponse({"status": 404, "error": f"no {path} in the viewer"}, 404)
    return FileResponse(directory / "index.html", headers=_NO_CACHE)


async def _app_config(request: Request, path: Path, package: str | None = None) -> Response:
    """The viewer's configuration, with the login block when the pages log in."""
    settings = archive_of(request).settings.auth
    script = await asyncio.to_thread(path.read_text, encoding="utf-8")
    if settings.browser_login:
        try:
            config = await browser_config(settings, _provider_metadata(request))
        except DicomCloudError as exc:
            return JSONResponse(
                {"status": exc.http_status, "error": exc.reason},
                exc.http_status,
                headers=_NO_CACHE,
            )
        if package == ohif3.PACKAGE:
            script += ohif3.oidc_block(oidc_client(config))
        else:
            script += viewer_oidc(config)
    return Response(script, media_type="text/javascript", headers=_NO_CACHE)


def _file(request: Request, path: Path, headers: dict[str, str] | None = None) -> Response:
    """``path``, or its precompressed ``.gz`` copy when the client accepts gzip."""
    compressed = path.with_name(path.name + ".gz")
    accepts = request.headers.get("accept-encoding", "")
    media_type, _ = mimetypes.guess_type(path.name)
    if media_type is None and path.suffix == ".jsonc":
        media_type = "application/json"
    extra = {"Vary": "Accept-Encoding", **(headers or {})}
    if "gzip" in accepts and compressed.is_file():
        return FileResponse(
            compressed,
            media_type=media_type or "application/octet-stream",
            headers={"Content-Encoding": "gzip", **extra},
        )
    return FileResponse(path, media_type=media_type, headers=extra)


def ui_routes() -> list[BaseRoute]:
    """The study browser, its status resource and the viewer."""
    return [
        Route("/", root, methods=["GET"]),
        Route("/api/status", status, methods=["GET"]),
        Route(AUTH_CONFIG, auth_config, methods=["GET"]),
        Mount("/ui", app=StaticFiles(directory=STATIC_DIR, html=True), name="ui"),
        Route(VIEWER_MOUNT, viewer, methods=["GET"]),
        Route(f"{VIEWER_MOUNT}/{{path:path}}", viewer, methods=["GET"]),
    ]
