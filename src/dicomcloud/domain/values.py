"""Identifier value types: UIDs (PS3.5 9 and 6.2 "UI") and tenant ids.

Both are used to build storage keys and index keys, so their validation is strict and
explicit: only ASCII characters from a fixed alphabet are accepted (never
``str.isdigit``, which is true for Arabic-Indic and other Unicode digits).

:class:`InvalidValue` is the error every parser of :mod:`dicomcloud.domain` raises; see
also :mod:`dicomcloud.domain.dates`, :mod:`dicomcloud.domain.person_names` and
:mod:`dicomcloud.domain.vr`.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_UID_LENGTH",
    "InvalidValue",
    "is_valid_tenant_id",
    "is_valid_uid",
    "parse_tenant_id",
    "parse_uid",
    "show",
]

#: PS3.5 9.1 and table 6.2-1 (UI): at most 64 characters, padding excluded.
MAX_UID_LENGTH = 64
#: Longest tenant id; tenant ids are not DICOM values but share the UID budget.
MAX_TENANT_ID_LENGTH = 64

_UID_CHARS = frozenset("0123456789.")
_TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class InvalidValue(ValueError):
    """A value does not conform to its Value Representation (PS3.5 6.2) or to the
    syntax the archive requires (tenant ids)."""


def show(text: str, limit: int = 80) -> str:
    """Return ``repr(text)`` cut to ``limit`` characters, safe for error messages and
    logs (control characters are escaped)."""
    if len(text) > limit:
        return repr(text[:limit]) + f"... ({len(text)} characters)"
    return repr(text)


def _uid_problem(uid: str) -> str | None:
    """Why ``uid`` (padding already removed) is not a valid UID, or ``None``."""
    if not uid:
        return "is empty"
    for char in uid:
        if char not in _UID_CHARS:
            return (
                f"contains the character {char!r} "
                "(only the digits 0-9 and '.' are allowed, PS3.5 9.1)"
            )
    if len(uid) > MAX_UID_LENGTH:
        return f"is {len(uid)} characters long (at most {MAX_UID_LENGTH}, PS3.5 9.1)"
    for component in uid.split("."):
        if not component:
            return "has an empty component (PS3.5 9.1)"
        if len(component) > 1 and component[0] == "0":
            return f"has a component with a leading zero ({component!r}, PS3.5 9.1)"
    return None


def parse_uid(text: str, *, name: str = "UID") -> str:
    """Validate a Unique Identifier (VR UI) and return it without its padding.

    PS3.5 9.1: a UID is a series of numeric components separated by ``.``; each
    component is ``0`` or a number without leading zeros, made only of the characters
    ``0``-``9``; the whole UID is at most 64 characters.  PS3.5 6.2 (UI): a value may be
    padded to an even length with a trailing NUL; trailing NULs and spaces are
    removed here, any other NUL or space is an error.

    ``name`` (the attribute keyword, e.g. ``"SOPInstanceUID"``) is used in the message
    of the :class:`InvalidValue` raised for an invalid value.
    """
    uid = text.rstrip("\x00 ")
    problem = _uid_problem(uid)
    if problem is not None:
        raise InvalidValue(f"{name} {show(text)} {problem}")
    return uid


def is_valid_uid(text: str) -> bool:
    """Whether :func:`parse_uid` accepts ``text`` (padding included)."""
    return _uid_problem(text.rstrip("\x00 ")) is None


def parse_tenant_id(text: str) -> str:
    """Validate a tenant id: 1 to 64 ASCII letters, digits, ``_`` or ``-``, not starting
    with ``_`` or ``-``.

    Tenant ids lead every storage key and index key, so nothing is stripped or
    normalised: the value is accepted exactly as given or :class:`InvalidValue` is
    raised.
    """
    if not text:
        raise InvalidValue("tenant id is empty")
    if len(text) > MAX_TENANT_ID_LENGTH:
        raise InvalidValue(
            f"tenant id {show(text)} is {len(text)} characters long "
            f"(at most {MAX_TENANT_ID_LENGTH})"
        )
    if _TENANT_RE.fullmatch(text) is None:
        if text[0] in "-_":
            raise InvalidValue(f"tenant id {show(text)} starts with {text[0]!r}")
        raise InvalidValue(
            f"tenant id {show(text)} contains characters other than A-Z, a-z, 0-9, '_', '-'"
        )
    return text


def is_valid_tenant_id(text: str) -> bool:
    """Whether :func:`parse_tenant_id` accepts ``text``."""
    return len(text) <= MAX_TENANT_ID_LENGTH and _TENANT_RE.fullmatch(text) is not None
