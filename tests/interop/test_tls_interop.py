"""``dicomcloud serve`` with HTTPS and DICOM TLS (PS3.15 B.1), both requiring client
certificates, used by real clients: httpx verifying the CA (STOW-RS, QIDO-RS, WADO-RS)
and dcmtk's echoscu / storescu with ``+tls``."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import (
    DICOMCLOUD,
    SERVER_START_TIMEOUT,
    SERVER_STOP_TIMEOUT,
    clean_environment,
    free_port,
    require,
    require_tool,
)
from integration.support import dataset_bytes, multipart_related, new_instance, split_multipart
from tls_certs import Pki, make_pki

pytestmark = pytest.mark.timeout(240)


@dataclass
class TlsServer:
    process: subprocess.Popen[bytes]
    http_port: int
    dicom_port: int
    log_path: Path
    pki: Pki

    @property
    def url(self) -> str:
        return f"https://localhost:{self.http_port}/dicom-web"

    def client(self, **kwargs: object) -> httpx.Client:
        verify = kwargs.pop("verify", self.pki.client_context())
        return httpx.Client(verify=verify, timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    require(DICOMCLOUD.exists(), f"{DICOMCLOUD} is not installed (uv sync)")
    base = tmp_path_factory.mktemp("tls-server")
    pki = make_pki(base / "pki")
    http_port, dicom_port = free_port(), free_port()
    env = clean_environment()
    for section in ("SERVER", "DIMSE"):
        env[f"DICOMCLOUD_{section}__TLS__CERT_FILE"] = str(pki.server_cert)
        env[f"DICOMCLOUD_{section}__TLS__KEY_FILE"] = str(pki.server_key)
        env[f"DICOMCLOUD_{section}__TLS__CA_FILE"] = str(pki.ca)
        env[f"DICOMCLOUD_{section}__TLS__REQUIRE_CLIENT_CERT"] = "true"
    log_path = base / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(DICOMCLOUD),
                "serve",
                "--data-dir",
                str(base / "data"),
                "--host",
                "127.0.0.1",
                "--http-port",
                str(http_port),
                "--dicom-port",
                str(dicom_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=base,
            start_new_session=True,
        )
    server = TlsServer(process, http_port, dicom_port, log_path, pki)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    with server.client() as client:
        while True:
            assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"https://localhost:{http_port}/readyz").status_code == 200:
                    break
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
    try:
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    log_text = log_path.read_text(errors="replace")
    assert process.returncode == 0, log_text[-3000:]
    assert "Traceback" not in log_text, log_text[-3000:]


def test_stow_qido_wado_over_https_with_a_client_certificate(tls_server: TlsServer) -> None:
    instance = new_instance()
    body, content_type = multipart_related([instance.data])
    with tls_server.client() as client:
        stored = client.post(
            f"{tls_server.url}/studies",
            content=body,
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        )
        assert stored.status_code == 200, stored.text
        retrieve_url = stored.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
        assert retrieve_url.startswith("https://")

        found = client.get(f"{tls_server.url}/studies", params={"StudyInstanceUID": instance.study})
        assert found.status_code == 200
        assert [s["0020000D"]["Value"][0] for s in found.json()] == [instance.study]

        back = client.get(
            f"{tls_server.url}{instance.path}",
            headers={"Accept": "multipart/related; type=application/dicom; transfer-syntax=*"},
        )
        assert back.status_code == 200
        [part] = split_multipart(back.content, back.headers["content-type"])
        assert part.data == instance.data


@pytest.mark.parametrize("client", ["no certificate", "untrusted certificate"])
def test_https_client_without_a_trusted_certificate_is_refused(
    tls_server: TlsServer, client: str
) -> None:
    context = (
        tls_server.pki.client_context(with_cert=False)
        if client == "no certificate"
        else tls_server.pki.client_context(rogue=True)
    )
    with tls_server.client(verify=context) as http, pytest.raises(httpx.TransportError):
        http.get(f"{tls_server.url}/studies")


def test_https_server_certificate_is_verified_by_clients(tls_server: TlsServer) -> None:
    untrusting = ssl.create_default_context()  # the system CAs only
    untrusting.load_cert_chain(tls_server.pki.client_cert, tls_server.pki.client_key)
    with tls_server.client(verify=untrusting) as http, pytest.raises(httpx.ConnectError):
        http.get(f"{tls_server.url}/studies")


def test_plain_http_on_the_https_port_gets_no_data(tls_server: TlsServer) -> None:
    with httpx.Client(timeout=30) as http, pytest.raises(httpx.TransportError):
        http.get(f"http://127.0.0.1:{tls_server.http_port}/dicom-web/studies")


def _dcmtk(
    tool: str, server: TlsServer, *args: str, files: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            require_tool(tool),
            "-aec",
            "DICOMCLOUD",
            "-aet",
            "MODALITY1",
            "-to",
            "30",
            "-ta",
            "30",
            "-td",
            "30",
            *args,
            "127.0.0.1",
            str(server.dicom_port),
            *files,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _tls_args(pki: Pki) -> list[str]:
    return ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca)]


def test_dcmtk_echoscu_and_storescu_over_tls(tls_server: TlsServer, tmp_path: Path) -> None:
    echo = _dcmtk("echoscu", tls_server, *_tls_args(tls_server.pki))
    assert echo.returncode == 0, echo.stdout + echo.stderr

    instance = new_instance()
    path = tmp_path / "image.dcm"
    path.write_bytes(instance.data)
    store = _dcmtk("storescu", tls_server, *_tls_args(tls_server.pki), files=(str(path),))
    assert store.returncode == 0, store.stdout + store.stderr
    with tls_server.client() as client:
        back = client.get(
            f"{tls_server.url}{instance.path}",
            headers={"Accept": "multipart/related; type=application/dicom; transfer-syntax=*"},
        )
    assert back.status_code == 200
    [part] = split_multipart(back.content, back.headers["content-type"])
    assert dataset_bytes(part.data) == dataset_bytes(instance.data)


@pytest.mark.parametrize(
    "mode", ["plain TCP", "anonymous TLS (no certificate)"], ids=["tcp", "anonymous"]
)
def test_dcmtk_without_a_client_certificate_is_refused(tls_server: TlsServer, mode: str) -> None:
    args = [] if mode == "plain TCP" else ["+tla", "+cf", str(tls_server.pki.ca)]
    echo = _dcmtk("echoscu", tls_server, *args)
    assert echo.returncode != 0, echo.stdout + echo.stderr
