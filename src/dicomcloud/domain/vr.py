"""Length limits of the string Value Representations (PS3.5 6.2, table 6.2-1).

PS3.5 counts the length of these VRs in characters (not bytes) for the VRs whose
character repertoire may be extended by (0008,0005) Specific Character Set, and the
other string VRs are restricted to single-byte characters, so counting characters
is right for all of them.  :func:`clip` works on decoded ``str`` values and therefore
never cuts a multi-byte character in half.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from dicomcloud.domain.person_names import clip_person_name
from dicomcloud.domain.values import InvalidValue

__all__ = ["MAX_LENGTHS", "MULTI_VALUED_VRS", "clip", "max_length"]

#: Maximum characters per value of each string VR (PS3.5 table 6.2-1); ``None`` means
#: no practical limit (2^32-2 bytes).  For PN the limit applies to each component
#: group (see :mod:`dicomcloud.domain.person_names`).
MAX_LENGTHS: Mapping[str, int | None] = MappingProxyType(
    {
        "AE": 16,
        "AS": 4,
        "CS": 16,
        "DA": 8,
        "DS": 16,
        "DT": 26,
        "IS": 12,
        "LO": 64,
        "LT": 10240,
        "PN": 64,
        "SH": 16,
        "ST": 1024,
        "TM": 14,
        "UC": None,
        "UI": 64,
        "UR": None,
        "UT": None,
    }
)

#: String VRs that may hold several values separated by ``\\`` (PS3.5 6.4).  LT, ST,
#: UT and UR always have one value (a backslash is an ordinary character there).
MULTI_VALUED_VRS = frozenset(MAX_LENGTHS) - {"LT", "ST", "UT", "UR"}


def max_length(vr: str) -> int | None:
    """The maximum length in characters of one value of ``vr`` (``None``: unlimited).

    Raises :class:`~dicomcloud.domain.values.InvalidValue` for a VR that is not a
    string VR.
    """
    try:
        return MAX_LENGTHS[vr]
    except KeyError:
        raise InvalidValue(f"{vr!r} is not a string VR with a length limit") from None


def clip(value: str, vr: str) -> tuple[str, bool]:
    """Clip ``value`` to the PS3.5 table 6.2-1 limit of ``vr``.

    Multi-valued strings are clipped value by value (each value between ``\\``
    separators); PN values are clipped per component group.  Counting is by
    characters.  Trailing spaces left at the cut are removed (they are padding, not
    content).  Returns the clipped value, a prefix of each original value, and whether
    anything was cut.
    """
    limit = max_length(vr)
    if vr == "PN":
        return clip_person_name(value)
    if limit is None:
        return value, False
    parts = value.split("\\") if vr in MULTI_VALUED_VRS else [value]
    clipped = False
    out: list[str] = []
    for part in parts:
        if len(part) > limit:
            part = part[:limit].rstrip(" ")
            clipped = True
        out.append(part)
    return "\\".join(out), clipped
