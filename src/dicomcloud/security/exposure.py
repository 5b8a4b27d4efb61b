"""Secure by default: an archive without authentication listens only on loopback.

``auth.mode`` unset is the embedded default: no authentication, fine on 127.0.0.1 where
only this machine's users reach it.  ``dicomcloud serve`` on any other address with
``auth.mode`` unset refuses to start; turning authentication off there takes an
explicit ``auth.mode = "none"`` (behind a proxy that authenticates, say).
"""

from __future__ import annotations

import ipaddress
import logging

from dicomcloud.config import Settings
from dicomcloud.errors import ConfigurationError

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` exposes the server to this machine only."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to a public address


def check_exposure(settings: Settings) -> None:
    """ConfigurationError when the server would listen beyond loopback without
    authentication that was asked for or explicitly turned off."""
    host, mode = settings.server.host, settings.auth.mode
    if is_loopback(host):
        return
    if mode is None:
        raise ConfigurationError(
            f"refusing to serve on {host} without authentication: set auth.mode to"
            ' "oidc", "apikey" or "oidc+apikey" (DICOMCLOUD_AUTH__MODE), or to "none" to'
            " turn authentication off explicitly (see README, Security)"
        )
    if mode == "none":
        log.warning(
            "authentication is OFF (auth.mode = none) and the server listens on %s:"
            " anyone who can reach it can read and write every tenant",
            host,
        )
