"""DICOM TLS (PS3.15 B.1) with pynetdicom: C-ECHO and C-STORE over TLS, mutual TLS
refusing modalities without a trusted certificate, and C-MOVE to a destination
reached over TLS (from an archive that also encrypts at rest)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from conftest import ArchiveFactory, LocalDimse, dimse_for
from integration.support import dataset_bytes, new_instance
from tls_certs import Pki, make_pki

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_settings(pki: Pki, *, require_client_cert: bool = True) -> dict[str, Any]:
    return {
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "ca_file": str(pki.ca),
        "require_client_cert": require_client_cert,
    }


def _associate(server: LocalDimse, tls: Any, contexts: list[str]) -> Any:
    ae = AE(ae_title="MODALITY1")
    for sop_class in contexts:
        ae.add_requested_context(sop_class)
    ae.acse_timeout = ae.network_timeout = 30
    kwargs: dict[str, Any] = {"ae_title": server.ae_title}
    if tls is not None:
        kwargs["tls_args"] = (tls, "localhost")
    return ae.associate("127.0.0.1", server.port, **kwargs)


async def test_echo_and_store_over_mutual_tls(make_archive: ArchiveFactory, pki: Pki) -> None:
    local = await make_archive(
        server__host="127.0.0.1", server__dicom_port=0, dimse__tls=tls_settings(pki)
    )
    instance = new_instance()
    ds = dcmread(io.BytesIO(instance.data))
    async with dimse_for(local) as server:

        def scenario() -> tuple[int, int]:
            assoc = _associate(
                server, pki.client_context(), [Verification, SecondaryCaptureImageStorage]
            )
            assert assoc.is_established
            try:
                echo = assoc.send_c_echo().Status
                store = assoc.send_c_store(ds).Status
            finally:
                assoc.release()
            return echo, store

        echo, store = await asyncio.to_thread(scenario)

    assert (echo, store) == (0x0000, 0x0000)
    back = dcmread(io.BytesIO(await local.retrieve_bytes(instance.path)))
    assert back.SOPInstanceUID == instance.sop
    assert back.PatientName == ds.PatientName and back.PixelData == ds.PixelData


@pytest.mark.parametrize("client", ["no TLS", "no certificate", "untrusted certificate"])
async def test_modality_without_a_trusted_certificate_is_refused(
    make_archive: ArchiveFactory, pki: Pki, client: str
) -> None:
    local = await make_archive(
        server__host="127.0.0.1", server__dicom_port=0, dimse__tls=tls_settings(pki)
    )
    tls = {
        "no TLS": None,
        "no certificate": pki.client_context(with_cert=False),
        "untrusted certificate": pki.client_context(rogue=True),
    }[client]
    async with dimse_for(local) as server:

        def scenario() -> tuple[bool, bool]:
            try:
                assoc = _associate(server, tls, [Verification])
            except OSError:  # the handshake failed on our side
                return False, True
            refused = not assoc.is_established
            if assoc.is_established:
                assoc.release()
            # The server keeps serving trusted modalities.
            good = _associate(server, pki.client_context(), [Verification])
            ok = good.is_established and good.send_c_echo().Status == 0
            good.release()
            return refused, ok

        refused, still_serving = await asyncio.to_thread(scenario)

    assert refused
    assert still_serving


async def test_a_stalled_handshake_does_not_block_other_modalities(
    make_archive: ArchiveFactory, pki: Pki
) -> None:
    import socket

    local = await make_archive(
        server__host="127.0.0.1", server__dicom_port=0, dimse__tls=tls_settings(pki)
    )
    async with dimse_for(local) as server:
        silent = socket.create_connection(("127.0.0.1", server.port))  # sends no ClientHello
        try:

            def echo() -> int:
                assoc = _associate(server, pki.client_context(), [Verification])
                assert assoc.is_established
                status = int(assoc.send_c_echo().Status)
                assoc.release()
                return status

            assert await asyncio.wait_for(asyncio.to_thread(echo), timeout=60) == 0
        finally:
            silent.close()


class _TlsStorageScp:
    """A C-MOVE destination listening with DICOM TLS, requiring a client certificate."""

    def __init__(self, pki: Pki) -> None:
        self.received: list[bytes] = []
        self.peers: list[str] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="TLSDEST")
        ae.add_supported_context(
            SecondaryCaptureImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
        self.server = ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
            ssl_context=pki.server_context(require_client_cert=True),
        )
        self.port: int = self.server.server_address[1]

    def _on_store(self, event: Any) -> int:
        with self._lock:
            self.received.append(event.request.DataSet.getvalue())
            peer = event.assoc.dul.socket.socket.getpeercert()
            self.peers.append(dict(x[0] for x in peer["subject"])["commonName"])
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


async def test_c_move_to_a_tls_destination_sends_the_stored_bytes(
    make_archive: ArchiveFactory, pki: Pki
) -> None:
    destination = _TlsStorageScp(pki)
    try:
        local = await make_archive(
            server__host="127.0.0.1",
            server__dicom_port=0,
            dimse__tls=tls_settings(pki),
            dimse__destinations={"TLSDEST": f"127.0.0.1:{destination.port}"},
            dimse__tls_destinations=["TLSDEST"],
            storage__encryption={
                "active_key_id": "k1",
                "keys": {"k1": base64.b64encode(os.urandom(32)).decode()},
            },
        )
        instance = new_instance()
        assert (await local.stow([instance.data])).status_code == 200
        async with dimse_for(local) as server:

            def move() -> list[int]:
                assoc = _associate(
                    server, pki.client_context(), [StudyRootQueryRetrieveInformationModelMove]
                )
                assert assoc.is_established
                identifier = Dataset()
                identifier.QueryRetrieveLevel = "STUDY"
                identifier.StudyInstanceUID = instance.study
                statuses = [
                    int(status.Status)
                    for status, _ in assoc.send_c_move(
                        identifier, "TLSDEST", StudyRootQueryRetrieveInformationModelMove
                    )
                    if status
                ]
                assoc.release()
                return statuses

            statuses = await asyncio.to_thread(move)
    finally:
        destination.stop()

    assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
    assert destination.received == [dataset_bytes(instance.data)]
    assert destination.peers == ["localhost"]  # the archive presented its certificate


def test_tls_settings_are_checked(tmp_path: Path, pki: Pki) -> None:
    from dicomcloud.config import load_settings
    from dicomcloud.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="cert_file and key_file"):
        load_settings(data_dir=tmp_path, dimse__tls={"cert_file": str(pki.server_cert)})
    with pytest.raises(ConfigurationError, match="require_client_cert needs ca_file"):
        load_settings(
            data_dir=tmp_path,
            server__tls={
                "cert_file": str(pki.server_cert),
                "key_file": str(pki.server_key),
                "require_client_cert": True,
            },
        )
    with pytest.raises(ConfigurationError, match="not in destinations"):
        load_settings(data_dir=tmp_path, dimse__tls_destinations=["NOWHERE"])
