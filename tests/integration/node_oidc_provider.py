"""A real OpenID provider for the browser login tests: panva's ``oidc-provider`` (npm,
OpenID Certified), run with Node.js from ``tests/oidc_provider`` (``provider.mjs``).

Its npm packages are installed on first use with ``npm ci`` from the committed
``package-lock.json``; without ``node``/``npm`` (Debian ``nodejs`` and ``npm``) the tests
that need it are skipped, or fail with ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from conftest import free_port, require

PROVIDER_DIR = Path(__file__).resolve().parents[1] / "oidc_provider"
CLIENT_ID = "dicomcloud-browser"
#: The confidential client that gets tokens with the client credentials grant.
UPLOADER_ID = "uploader"
UPLOADER_SECRET = "uploader-secret"
AUDIENCE = "urn:dicomcloud:browser-test"
START_TIMEOUT = 90.0


@dataclass
class NodeProvider:
    """The running provider; ``url`` is its issuer identifier."""

    url: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def log(self) -> str:
        return "\n".join(self.lines)

    def client_token(self, resource: str, scope: str = "dicom:read dicom:write") -> str:
        """An access token of the confidential client (RFC 6749 4.4, RFC 8707 resource)."""
        response = httpx.post(
            f"{self.url}/token",
            data={"grant_type": "client_credentials", "resource": resource, "scope": scope},
            auth=(UPLOADER_ID, UPLOADER_SECRET),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


def install() -> Path:
    """``node``, with the provider's packages installed; skips (fails in CI) without."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    require(node is not None and npm is not None, "node and npm are needed (Debian nodejs, npm)")
    assert node is not None and npm is not None
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=PROVIDER_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        require(done.returncode == 0, f"npm ci of the test OpenID provider failed:\n{done.stderr}")
    return Path(node)


@contextlib.contextmanager
def node_provider(
    *,
    redirect_uris: list[str],
    post_logout_redirect_uris: list[str] | None = None,
    audience: str = AUDIENCE,
    client_id: str = CLIENT_ID,
    port: int | None = None,
) -> Iterator[NodeProvider]:
    """The provider on ``port`` (a free one by default) of 127.0.0.1 for the ``with``
    block."""
    node = install()
    port = port or free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "CLIENT_ID": client_id,
        "AUDIENCE": audience,
        "REDIRECT_URIS": ",".join(redirect_uris),
        "POST_LOGOUT_REDIRECT_URIS": ",".join(post_logout_redirect_uris or []),
        "RESOURCE_SCOPES": "dicom:read dicom:write",
        "UPLOADER_ID": UPLOADER_ID,
        "UPLOADER_SECRET": UPLOADER_SECRET,
    }
    process = subprocess.Popen(
        [str(node), "provider.mjs"],
        cwd=PROVIDER_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    provider = NodeProvider(f"http://127.0.0.1:{port}", process)
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            provider.lines.append(line.rstrip())
            if line.startswith("listening "):
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not ready.is_set() and process.poll() is None and time.monotonic() < deadline:
        ready.wait(0.2)
    try:
        assert ready.is_set(), f"the OpenID provider did not start:\n{provider.log()}"
        yield provider
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        reader.join(timeout=10)
