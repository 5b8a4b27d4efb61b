"""TLS contexts for HTTPS (DICOMweb) and DICOM TLS (PS3.15 B.1, the Basic TLS Secure
Transport Connection Profile; BCP 195 profiles of PS3.15 B.9-B.11).

Both directions start from ``ssl.create_default_context`` (certificate and hostname
checks on, weak ciphers and compression off) and refuse anything below TLS 1.2.  A
server asks for client certificates when a CA file is configured and rejects clients
without a valid one when ``require_client_cert`` is set (mutual TLS for modalities).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from dicomcloud.errors import ConfigurationError

if TYPE_CHECKING:
    from dicomcloud.config import TlsSettings


def server_context(settings: TlsSettings, section: str) -> ssl.SSLContext:
    """The context of a listening socket (``section`` names the settings in errors)."""
    assert settings.cert_file is not None and settings.key_file is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"{section}: cannot load cert_file/key_file: {getattr(exc, 'reason', None) or exc}"
        ) from exc
    if settings.ca_file is not None:
        _load_ca(context, settings, section)
        context.verify_mode = (
            ssl.CERT_REQUIRED if settings.require_client_cert else ssl.CERT_OPTIONAL
        )
    return context


def client_context(settings: TlsSettings, section: str) -> ssl.SSLContext:
    """The context of an outgoing connection: verifies the peer against ``ca_file``
    (the system CAs without it) and presents our certificate when configured."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.ca_file is not None:
        _load_ca(context, settings, section)
    context.check_hostname = settings.check_hostname
    if settings.cert_file is not None and settings.key_file is not None:
        try:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"{section}: cannot load cert_file/key_file: {getattr(exc, 'reason', None) or exc}"
            ) from exc
    return context


def _load_ca(context: ssl.SSLContext, settings: TlsSettings, section: str) -> None:
    try:
        context.load_verify_locations(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"{section}.ca_file: cannot load: {getattr(exc, 'reason', None) or exc}"
        ) from exc
