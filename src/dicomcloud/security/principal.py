"""Who is calling and what they may do: permissions per tenant, and the two ways a
request is refused (RFC 9110 15.5.2 401 Unauthorized, 15.5.4 403 Forbidden)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from dicomcloud.errors import DicomCloudError

#: A grant key meaning "every tenant" (authentication off).
ANY_TENANT = "*"


class Permission(enum.StrEnum):
    """What a caller may do in a tenant.  Each is granted on its own: ``admin`` does not
    imply ``read``."""

    READ = "read"  # QIDO-RS, WADO-RS, WADO-URI (GET, HEAD)
    WRITE = "write"  # STOW-RS (POST)
    DELETE = "delete"  # DELETE
    ADMIN = "admin"  # administrative endpoints

    @classmethod
    def parse_list(cls, text: str) -> frozenset[Permission]:
        """``"read,write"`` as permissions; ValueError naming an unknown one."""
        names = [name.strip().lower() for name in text.split(",") if name.strip()]
        if not names:
            raise ValueError("no permission given (read, write, delete, admin)")
        try:
            return frozenset(cls(name) for name in names)
        except ValueError as exc:
            raise ValueError(f"{exc}; permissions are read, write, delete, admin") from exc


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.  ``grants`` maps tenant -> permissions; the key
    ``ANY_TENANT`` applies to every tenant."""

    subject: str
    scheme: str  # "bearer", "apikey" or "none"
    grants: Mapping[str, frozenset[Permission]] = field(default_factory=dict)

    def permissions_in(self, tenant: str) -> frozenset[Permission]:
        return self.grants.get(tenant, frozenset()) | self.grants.get(ANY_TENANT, frozenset())

    def may(self, permission: Permission, tenant: str) -> bool:
        return permission in self.permissions_in(tenant)

    def acts_for(self, tenant: str) -> bool:
        """Whether the caller belongs to ``tenant`` (whatever it may do there)."""
        return tenant in self.grants or ANY_TENANT in self.grants


class AuthenticationFailed(DicomCloudError):
    """No credentials, or credentials that do not prove who the caller is: 401 with a
    ``WWW-Authenticate`` challenge (RFC 9110 11.6.1).  ``error`` is the RFC 6750 3.1
    code (``invalid_request``, ``invalid_token``) or None when nothing was sent."""

    http_status = 401

    def __init__(
        self, reason: str, *, error: str | None = "invalid_token", scheme: str | None = None
    ) -> None:
        super().__init__(reason)
        self.error = error
        #: The scheme of the refused credentials ("bearer", "apikey"), None if none.
        self.scheme = scheme


class PermissionDenied(DicomCloudError):
    """A known caller without the permission the request needs (RFC 6750 3.1
    ``insufficient_scope``): 403."""

    http_status = 403

    def __init__(self, reason: str, *, scheme: str | None = None) -> None:
        super().__init__(reason)
        #: The scheme of the caller's credentials ("bearer", "apikey").
        self.scheme = scheme


class ProviderUnavailable(DicomCloudError):
    """The identity provider's discovery document or key set cannot be fetched: the
    token cannot be checked now (503), which says nothing about the token."""

    http_status = 503
