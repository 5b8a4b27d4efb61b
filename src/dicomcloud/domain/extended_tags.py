"""Extended query tags: further attributes, private ones included, that a tenant has
configured as indexed and searchable (QIDO-RS PS3.18 10.6.1, C-FIND PS3.4 C.4.1).

Each tag belongs to one level (study, series or instance) and is a matching key there
and at the levels below.  Its values are read from the per-level DICOM JSON that
extraction keeps (``dicomcloud.domain.level_json``), so the index and ``dicomcloud
reindex`` need no second parse of the file.  A private tag names its private creator
(PS3.5 7.8.1): ``00191010`` with creator ``GEMS_ACQU_01`` is element ``10`` of the block
that creator reserved in group ``0019``, wherever the block was placed in a data set.
Without a creator, a private tag is matched at exactly the element given.

A tag may also lie inside a sequence: ``RequestAttributesSequence.RequestedProcedureID``
(or ``0040A370.00401001``) is the Requested Procedure ID of any item of the sequence,
and a query on it is sequence matching (PS3.4 C.2.2.2.6) with one key in the item: the
record matches if one item's value matches.  (Two keys of one sequence are matched each
on its own, not necessarily in the same item.)

Supported VRs: those whose values compare as text (AE, AS, CS, DA, DT, LO, PN, SH, TM,
UI), the integers IS, US, SS, SL, UL, SV and UV, and the decimals DS, FD and FL (kept in
the form ``decimal_key`` gives, so that ``1.50`` matches ``1.5``).  Numbers take single
value matching only (PS3.4 C.2.2.2.4).

A PN value is also kept folded (``folded_value``: case, accents and width, as the
``*_fuzzy`` copies of PatientName and ReferringPhysicianName), so that ``fuzzymatching``
(PS3.4 C.2.2.2.6, PS3.18 8.3.4.5) matches it as it matches PatientName.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dicomcloud.domain.dates import parse_da, parse_dt, parse_tm
from dicomcloud.domain.patterns import fold
from dicomcloud.domain.query import DECIMAL_VRS, INT64, INTEGER_VRS, QueryLevel, decimal_key
from dicomcloud.domain.records import ExtractedInstance
from dicomcloud.domain.values import InvalidValue

__all__ = [
    "EXTENDED_LEVELS",
    "SUPPORTED_VRS",
    "ExtendedTag",
    "ExtendedValue",
    "extended_values",
    "folded_value",
    "person_name_keys",
    "replacements",
    "searchable_at",
]

#: The levels a tag may be configured at, top down (PS3.4 C.6.1.1).
EXTENDED_LEVELS: Final = ("study", "series", "instance")
#: VRs an extended query tag may have (see the module docstring).
SUPPORTED_VRS: Final = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "PN", "SH", "TM", "UI", *INTEGER_VRS, *DECIMAL_VRS}
)
#: Longest value kept; longer ones are not indexed (the VRs above stay well below).
MAX_VALUE_LENGTH: Final = 256
#: Longest folded PN value kept (folding may double a character, as for
#: ``dicomcloud.domain.records.FOLDED_PN_LENGTH``).
FOLDED_VALUE_LENGTH: Final = 2 * MAX_VALUE_LENGTH
_NORMALISERS = {"DA": parse_da, "TM": parse_tm, "DT": parse_dt}
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_QUERY_LEVEL_RANK = {
    QueryLevel.PATIENT: -1,
    QueryLevel.STUDY: 0,
    QueryLevel.SERIES: 1,
    QueryLevel.IMAGE: 2,
}


@dataclass(frozen=True, slots=True)
class ExtendedTag:
    """One configured extended query tag.

    ``key`` is how queries name it: the keyword of a public attribute, the eight
    upper-case hexadecimal digits of a private one.  ``tag`` is the element
    (``gggg,xxee``; with a ``private_creator`` only ``gggg`` and ``ee`` count).
    ``tenants`` is None for every tenant.  ``path`` holds the sequences, outermost
    first, that ``tag`` lies in (``key`` is then the dotted path of keywords).
    """

    key: str
    tag: int
    level: str
    vr: str
    private_creator: str | None = None
    tenants: frozenset[str] | None = None
    path: tuple[int, ...] = ()

    @property
    def hex(self) -> str:
        """The top-level attribute as DICOM JSON names it (PS3.18 F.2.1.1): the tag, or
        the outermost sequence of its path (what a response carries)."""
        return f"{(self.path[0] if self.path else self.tag):08X}"

    def applies_to(self, tenant_id: str) -> bool:
        """Whether ``tenant_id`` has this tag configured."""
        return self.tenants is None or tenant_id in self.tenants


@dataclass(frozen=True, slots=True)
class ExtendedValue:
    """The values one level record holds for one extended tag (one index row each)."""

    tenant_id: str
    level: str
    uid: str
    key: str
    values: tuple[str | int, ...]


def searchable_at(tags: Iterable[ExtendedTag], level: QueryLevel) -> list[ExtendedTag]:
    """The tags that are matching keys at ``level``: those of the level and above."""
    rank = _QUERY_LEVEL_RANK[level]
    return [t for t in tags if 0 <= EXTENDED_LEVELS.index(t.level) <= rank]


def person_name_keys(tags: Iterable[ExtendedTag]) -> frozenset[str]:
    """The keys of the PN-valued tags: their values are also stored folded."""
    return frozenset(t.key for t in tags if t.vr == "PN")


def folded_value(value: str) -> str:
    """The fuzzy-matching form of a stored PN value (PS3.4 C.2.2.2.6:
    ``dicomcloud.domain.patterns.fold``, as ``dicomcloud.domain.records.folded_name``)."""
    return fold(value)[:FOLDED_VALUE_LENGTH]


def _in_sequences(tag: ExtendedTag, found: dict[str, Any]) -> list[Any]:
    """The values of a tag inside sequences: from every item on its path."""
    items = [found]
    for sequence in tag.path:
        items = [
            item
            for parent in items
            for item in (parent.get(f"{sequence:08X}") or {}).get("Value") or []
            if isinstance(item, dict)
        ]
    return [
        value for item in items for value in (item.get(f"{tag.tag:08X}") or {}).get("Value") or []
    ]


def _element_key(tag: ExtendedTag, found: dict[str, Any]) -> str | None:
    """The JSON key of ``tag`` in one data set: the private block is resolved from the
    creator elements ``(gggg,0010-00FF)`` (PS3.5 7.8.1)."""
    if tag.private_creator is None:
        return tag.hex
    group = tag.tag >> 16
    for block in range(0x10, 0x100):
        creator = found.get(f"{group:04X}{block:04X}")
        if creator is None:
            continue
        values = creator.get("Value") or []
        if values and str(values[0]).strip() == tag.private_creator:
            return f"{group:04X}{block:02X}{tag.tag & 0xFF:02X}"
    return None


def _index_value(vr: str, value: Any) -> str | int | None:
    """A stored value in the form queries compare with (dates normalised, PN component
    groups joined by ``=``); None when it cannot be indexed."""
    if value is None:
        return None
    if vr == "PN":
        if not isinstance(value, dict):
            return None
        text = "=".join(str(value.get(g, "")) for g in _PN_GROUPS).rstrip("=")
    elif vr in INTEGER_VRS:
        try:
            number = int(value)
        except (TypeError, ValueError):
            return None
        return number if number in INT64 else None
    elif vr in DECIMAL_VRS:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return None
        try:
            return decimal_key(vr, value)
        except ValueError:
            return None
    else:
        text = str(value).strip(" ")
        if vr in _NORMALISERS:
            try:
                text = _NORMALISERS[vr](text)
            except InvalidValue:
                return None
    if not text or len(text) > MAX_VALUE_LENGTH:
        return None
    return text


def extended_values(
    tags: Sequence[ExtendedTag],
    tenant_id: str,
    uids: dict[str, str],
    attributes: Sequence[str | None],
) -> list[ExtendedValue]:
    """The values of every tag of ``tenant_id`` found in one instance's per-level DICOM
    JSON ``attributes``; ``uids`` maps each level to its UID in that instance.  A tag the
    instance lacks gives an empty ``values``."""
    mine = [t for t in tags if t.applies_to(tenant_id)]
    if not mine:
        return []
    found: dict[str, Any] = {}
    for text in attributes:
        if text:
            found.update(json.loads(text))
    out: list[ExtendedValue] = []
    for tag in mine:
        if tag.path:
            raw = _in_sequences(tag, found)
        else:
            key = _element_key(tag, found)
            element = found.get(key) if key is not None else None
            raw = (element or {}).get("Value") or []
        values = [_index_value(tag.vr, v) for v in raw]
        unique = tuple(dict.fromkeys(v for v in values if v is not None))
        out.append(ExtendedValue(tenant_id, tag.level, uids[tag.level], tag.key, unique))
    return out


#: (tenant, level, level UID, tag key): the values that replace the stored ones.
Replacements = dict[tuple[str, str, str, str], tuple[str | int, ...]]


def replacements(
    tags: Sequence[ExtendedTag], extracted: Iterable[ExtractedInstance]
) -> Replacements:
    """What storing ``extracted`` (in order) writes for the extended tags: an instance's
    own values always replace the stored ones (the instance row is rewritten whole); a
    study or series keeps its stored values unless the new instance has some (as its
    other attributes: the newest instance's non-empty values win)."""
    out: Replacements = {}
    if not tags:
        return out
    for item in extracted:
        uids = {
            "study": item.study.study_instance_uid,
            "series": item.series.series_instance_uid,
            "instance": item.instance.sop_instance_uid,
        }
        jsons = (
            item.patient.attributes,
            item.study.attributes,
            item.series.attributes,
            item.instance.attributes,
        )
        for found in extended_values(tags, item.instance.tenant_id, uids, jsons):
            if found.values or found.level == "instance":
                out[(found.tenant_id, found.level, found.uid, found.key)] = found.values
    return out
