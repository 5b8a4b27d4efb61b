"""Person Name values (VR PN, PS3.5 6.2 and 6.2.1).

A PN value has up to three component groups separated by ``=``: alphabetic,
ideographic and phonetic.  Each group has up to five components separated by ``^``:
family name, given name, middle name, prefix and suffix.  PS3.5 table 6.2-1 limits each
component group to 64 characters.

These functions work on an already *decoded* string (one value; a multi-valued PN is
split on ``\\`` first).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from dicomcloud.domain.values import InvalidValue, show

__all__ = [
    "MAX_GROUP_LENGTH",
    "PersonName",
    "PersonNameGroup",
    "clip_person_name",
    "parse_person_name",
]

#: PS3.5 table 6.2-1, PN: 64 characters per component group.
MAX_GROUP_LENGTH = 64
_MAX_GROUPS = 3
_MAX_COMPONENTS = 5


@dataclass(frozen=True, slots=True)
class PersonNameGroup:
    """One component group (PS3.5 6.2.1.1); absent components are ``""``."""

    family: str = ""
    given: str = ""
    middle: str = ""
    prefix: str = ""
    suffix: str = ""

    def format(self) -> str:
        """The group as DICOM text, without trailing empty components."""
        parts = [self.family, self.given, self.middle, self.prefix, self.suffix]
        while parts and not parts[-1]:
            parts.pop()
        return "^".join(parts)

    def is_empty(self) -> bool:
        """Whether every component is empty."""
        return not any(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True, slots=True)
class PersonName:
    """A parsed PN value: alphabetic, ideographic and phonetic groups (PS3.5 6.2.1)."""

    alphabetic: PersonNameGroup = field(default_factory=PersonNameGroup)
    ideographic: PersonNameGroup = field(default_factory=PersonNameGroup)
    phonetic: PersonNameGroup = field(default_factory=PersonNameGroup)

    def format(self) -> str:
        """The value as DICOM text (groups joined by ``=``, components by ``^``),
        without trailing empty components or groups (PS3.5 6.2.1.1)."""
        groups = [self.alphabetic.format(), self.ideographic.format(), self.phonetic.format()]
        while groups and not groups[-1]:
            groups.pop()
        return "=".join(groups)

    def __str__(self) -> str:
        return self.format()


def parse_person_name(text: str) -> PersonName:
    """Parse one decoded PN value into its component groups.

    Leading and trailing spaces of the value and of each component are not
    significant (PS3.5 6.2.1) and are removed.  Raises
    :class:`~dicomcloud.domain.values.InvalidValue` when the value has a backslash
    (several values), more than three groups, a group with more than five components,
    or a group longer than 64 characters.
    """
    value = text.strip(" \x00")
    if "\\" in value:
        raise InvalidValue(f"PN {show(text)} has several values (contains '\\')")
    raw_groups = value.split("=")
    if len(raw_groups) > _MAX_GROUPS:
        raise InvalidValue(f"PN {show(text)} has {len(raw_groups)} component groups (at most 3)")
    groups: list[PersonNameGroup] = []
    for raw in raw_groups:
        if len(raw) > MAX_GROUP_LENGTH:
            raise InvalidValue(
                f"PN {show(text)} has a component group of {len(raw)} characters "
                f"(at most {MAX_GROUP_LENGTH}, PS3.5 6.2)"
            )
        components = raw.split("^")
        if len(components) > _MAX_COMPONENTS:
            raise InvalidValue(
                f"PN {show(text)} has a component group with {len(components)} components "
                "(at most 5)"
            )
        groups.append(PersonNameGroup(*(component.strip(" ") for component in components)))
    while len(groups) < _MAX_GROUPS:
        groups.append(PersonNameGroup())
    return PersonName(*groups)


def clip_person_name(text: str) -> tuple[str, bool]:
    """Clip each component group of each value of a decoded PN to 64 characters.

    Values are separated by ``\\`` and groups by ``=``; the structure is kept, only
    over-long groups are cut (by characters, never inside one).  Returns the result
    and whether anything was cut.
    """
    clipped = False
    values: list[str] = []
    for value in text.split("\\"):
        groups: list[str] = []
        for group in value.split("="):
            if len(group) > MAX_GROUP_LENGTH:
                group = group[:MAX_GROUP_LENGTH].rstrip(" ")
                clipped = True
            groups.append(group)
        values.append("=".join(groups))
    return "\\".join(values), clipped
