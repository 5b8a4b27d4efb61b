"""Which tenant an association acts for, decided once when it is requested.

With ``[[dimse.tenants]]`` configured, the Called AE Title of the A-ASSOCIATE-RQ names
the tenant: the first entry for that title whose calling AE allow-list and peer
networks admit the requestor wins.  No entry for the title is rejected as
called-AE-title-not-recognized, entries that all refuse the requestor as
calling-AE-title-not-recognized (A-ASSOCIATE-RJ, rejected-permanent, source DICOM UL
service-user, PS3.8 9.3.4 / 7.1.1.9).  Without entries every association acts for the
default tenant whatever title it calls (a single-tenant archive).

The decision is kept on the association; C-STORE, C-FIND, C-GET and C-MOVE read it
(:func:`association_tenant`), so no request on one association can touch another
tenant's data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pynetdicom import evt

from dicomcloud.config import Settings, find_address

__all__ = [
    "REASON_CALLED_AE_NOT_RECOGNIZED",
    "REASON_CALLING_AE_NOT_RECOGNIZED",
    "AssociationRejected",
    "AssociationTenant",
    "association_tenant",
    "bind_tenant",
    "resolve_tenant",
    "set_association_tenant",
]

log = logging.getLogger(__name__)

#: A-ASSOCIATE-RJ Result: rejected-permanent; Source: DICOM UL service-user (PS3.8 9.3.4).
RESULT_REJECTED_PERMANENT: Final = 0x01
SOURCE_SERVICE_USER: Final = 0x01
#: Reason/Diag. for the service-user source (PS3.8 Table 9-21).
REASON_CALLING_AE_NOT_RECOGNIZED: Final = 0x03
REASON_CALLED_AE_NOT_RECOGNIZED: Final = 0x07

_ATTRIBUTE: Final = "_dicomcloud_tenant"


@dataclass(frozen=True, slots=True)
class AssociationTenant:
    """The tenant of one association, the AE title it called and the C-MOVE
    destinations it may use."""

    tenant_id: str
    called_ae_title: str
    destinations: Mapping[str, str] = field(default_factory=dict)

    def destination(self, ae_title: str) -> tuple[str, int] | None:
        """The address of Move Destination ``ae_title`` for this tenant, or None."""
        return find_address(dict(self.destinations), ae_title)


class AssociationRejected(Exception):
    """The association must be rejected with ``reason`` (PS3.8 Table 9-21)."""

    def __init__(self, reason: int, comment: str) -> None:
        super().__init__(comment)
        self.reason = reason
        self.comment = comment


def resolve_tenant(
    settings: Settings, called_ae_title: str, calling_ae_title: str, address: str
) -> AssociationTenant:
    """The tenant an association from ``calling_ae_title`` at ``address`` calling
    ``called_ae_title`` acts for; :class:`AssociationRejected` if none admits it."""
    called = called_ae_title.strip()
    calling = calling_ae_title.strip()
    entries = settings.dimse.tenants
    if not entries:
        return AssociationTenant(settings.default_tenant, called, settings.dimse.destinations)
    candidates = [entry for entry in entries if entry.called_ae_title == called]
    if not candidates:
        raise AssociationRejected(
            REASON_CALLED_AE_NOT_RECOGNIZED, f"no tenant is reached by called AE title {called!r}"
        )
    for entry in candidates:
        if entry.admits_calling(calling) and entry.admits_peer(address):
            return AssociationTenant(
                entry.tenant, called, entry.destinations or settings.dimse.destinations
            )
    raise AssociationRejected(
        REASON_CALLING_AE_NOT_RECOGNIZED,
        f"calling AE title {calling!r} from {address} may not call {called!r}",
    )


def _title(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip()
    return str(value or "").strip()


def bind_tenant(event: Any, settings: Settings) -> None:
    """EVT_REQUESTED handler: decide the association's tenant, or reject it.

    Rejection is sent the way pynetdicom rejects by itself (A-ASSOCIATE-RJ, then
    EVT_REJECTED, then the association ends); negotiation then never starts.
    """
    assoc = event.assoc
    request = assoc.requestor.primitive
    called = _title(request.called_ae_title)
    calling = _title(request.calling_ae_title)
    address = str(assoc.requestor.address or "")
    try:
        tenant = resolve_tenant(settings, called, calling, address)
    except AssociationRejected as exc:
        log.warning("association rejected: %s", exc.comment)
        assoc.acse.send_reject(RESULT_REJECTED_PERMANENT, SOURCE_SERVICE_USER, exc.reason)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()
        return
    set_association_tenant(assoc, tenant)
    if settings.dimse.tenants:
        # The A-ASSOCIATE-AC echoes the title that was called (PS3.8 7.1.1.4).
        assoc.acceptor.ae_title = called


def set_association_tenant(assoc: Any, tenant: AssociationTenant) -> None:
    """Keep ``tenant`` as the tenant of ``assoc``."""
    setattr(assoc, _ATTRIBUTE, tenant)


def association_tenant(assoc: Any) -> AssociationTenant:
    """The tenant :func:`bind_tenant` decided for ``assoc``."""
    tenant = getattr(assoc, _ATTRIBUTE, None)
    if not isinstance(tenant, AssociationTenant):  # pragma: no cover - bound when requested
        raise LookupError("the association has no tenant")
    return tenant
