"""Token claims -> permissions per tenant, by the configured ``[[auth.rules]]``.

The model is the seed's RoleRule (a JSONPath over the claims, matched against a list of
values), fixed where it was weak: every claim is visible to the rules (the seed dropped
all but a fixed set), the outcome is a set of permissions rather than a yes/no per API
group, and the tenant comes from the token instead of an unchecked ``x-tenant`` header.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

from jsonpath_ng.ext.parser import parse
from jsonpath_ng.jsonpath import JSONPath

from dicomcloud.config import ClaimRule
from dicomcloud.security.principal import Permission, PermissionDenied


@lru_cache(maxsize=256)
def _compiled(path: str) -> JSONPath:
    return parse(path)


def claim_values(claims: Mapping[str, Any], path: str, *, split: bool = False) -> list[str]:
    """The string values at JSONPath ``path`` of ``claims``: lists are flattened one
    level; with ``split`` strings are split on whitespace (``scope``, RFC 8693 4.2)."""
    return list(_strings((m.value for m in _compiled(path).find(dict(claims))), split))


def _strings(found: Iterator[Any], split: bool) -> Iterator[str]:
    for value in found:
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, str):
                yield from (item.split() if split else [item])
            elif isinstance(item, bool | int | float):
                yield str(item)


def token_tenants(
    claims: Mapping[str, Any], tenant_claim: str, *, default_tenant: str, required: bool
) -> frozenset[str]:
    """The tenants a token acts for: the values of ``tenant_claim``, else the default
    tenant (403 when ``required``)."""
    tenants = frozenset(claim_values(claims, tenant_claim))
    if tenants:
        return tenants
    if required:
        raise PermissionDenied(f"the token has no tenant claim ({tenant_claim})")
    return frozenset({default_tenant})


def grants_of(
    claims: Mapping[str, Any], rules: Sequence[ClaimRule], tenants: frozenset[str]
) -> dict[str, frozenset[Permission]]:
    """Tenant -> permissions granted by every rule whose claim yields one of its values."""
    grants: dict[str, set[Permission]] = {tenant: set() for tenant in tenants}
    for rule in rules:
        found = set(claim_values(claims, rule.claim, split=rule.split))
        if not found.intersection(rule.values):
            continue
        for tenant in tenants:
            if rule.tenants is None or tenant in rule.tenants:
                grants[tenant].update(Permission(name) for name in rule.permissions)
    return {tenant: frozenset(perms) for tenant, perms in grants.items()}
