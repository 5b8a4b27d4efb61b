"""Wildcard patterns (PS3.4 C.2.2.2.4) as data, rendered by each index backend.

A pattern is a tuple of parts: literal text, :data:`ANY` (``*``: any run of characters,
also none) or :data:`ONE` (``?``: exactly one character).  Person names (PS3.5 6.2.1)
hold up to three component groups joined by ``=``; a PN value matches when the whole
value or any one group matches (:func:`person_name_forms`), so that a name typed in
ideographic or phonetic form finds the patient as well as the alphabetic form does.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Callable, Sequence

__all__ = [
    "ANY",
    "ONE",
    "Part",
    "Pattern",
    "fold",
    "fold_pattern",
    "literal",
    "person_name_forms",
    "to_regex",
    "wildcard",
]


class Wild(enum.Enum):
    ANY = "*"
    ONE = "?"


ANY = Wild.ANY
ONE = Wild.ONE

Part = str | Wild
Pattern = tuple[Part, ...]

_GROUP_SEPARATOR = "="


def wildcard(text: str) -> Pattern:
    """The parts of a QIDO-RS/C-FIND wildcard value: ``*`` and ``?`` are wild."""
    parts: list[Part] = []
    for char in text:
        if char == "*":
            if not parts or parts[-1] is not ANY:  # "**" means the same as "*"
                parts.append(ANY)
        elif char == "?":
            parts.append(ONE)
        elif parts and isinstance(parts[-1], str):
            parts[-1] += char
        else:
            parts.append(char)
    return tuple(parts)


def literal(text: str) -> Pattern:
    """A pattern matching exactly ``text``."""
    return (text,) if text else ()


def fold(text: str) -> str:
    """``text`` as fuzzy matching of person names compares it (PS3.4 C.2.2.2.6 leaves
    the rules to the implementation): compatibility forms unified (NFKD: full- and
    half-width forms, ligatures), combining marks dropped (accents, diacritics, kana
    voicing marks), case folded (``str.casefold``), then recomposed (NFC: Hangul
    syllables stay one character each).  The same on every backend and for every
    character set, because it runs in Python: at ingest for the stored value, at query
    time for the literal parts of the pattern."""
    decomposed = unicodedata.normalize("NFKD", text).casefold()
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", kept)


def fold_pattern(pattern: Pattern) -> Pattern:
    """``pattern`` with its literal text folded (:func:`fold`); wildcards stay wild,
    also where folding would turn a literal character into ``*`` or ``?``."""
    return tuple(fold(part) if isinstance(part, str) else part for part in pattern)


def person_name_forms(pattern: Pattern) -> list[Pattern]:
    """Patterns whose union matches a PN value equal to ``pattern`` as a whole or in one
    of its component groups."""
    sep = _GROUP_SEPARATOR
    return [
        pattern,
        (*pattern, sep, ANY),
        (ANY, sep, *pattern),
        (ANY, sep, *pattern, sep, ANY),
    ]


def render(pattern: Sequence[Part], *, any_: str, one: str, literal: Callable[[str], str]) -> str:
    """The pattern in another wildcard syntax (a regex, SQL LIKE, SQLite GLOB): ``any_``
    for ``*``, ``one`` for ``?`` and ``literal`` escaping the text between them."""
    out: list[str] = []
    for part in pattern:
        if part is ANY:
            out.append(any_)
        elif part is ONE:
            out.append(one)
        else:
            assert isinstance(part, str)
            out.append(literal(part))
    return "".join(out)


def to_regex(pattern: Sequence[Part]) -> re.Pattern[str]:
    """A regular expression for ``fullmatch`` (the reference semantics)."""
    return re.compile(render(pattern, any_=".*", one=".", literal=re.escape), re.DOTALL)
