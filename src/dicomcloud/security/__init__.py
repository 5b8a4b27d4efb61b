"""Authentication and authorisation of DICOMweb (README "Security").

* ``principal``: permissions, the authenticated caller and what it may do per tenant;
* ``claims``: token claims -> permissions, by configurable JSONPath rules;
* ``jwks``: the provider's JWK Set, cached, refetched on an unknown ``kid``;
* ``tokens``: OAuth 2.0 bearer tokens (RFC 6750) validated as JWTs (RFC 7519);
* ``api_keys``: hashed, revocable API keys for machines;
* ``middleware``: the ASGI guard in front of every DICOMweb route;
* ``exposure``: the start-up check that refuses an unauthenticated public listener.
"""

from dicomcloud.security.principal import (
    ANY_TENANT,
    AuthenticationFailed,
    Permission,
    PermissionDenied,
    Principal,
)

__all__ = [
    "ANY_TENANT",
    "AuthenticationFailed",
    "Permission",
    "PermissionDenied",
    "Principal",
]
