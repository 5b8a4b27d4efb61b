"""C-FIND identifiers and responses (PS3.4 C.4.1, C.6.1 and C.6.2) on the QIDO-RS engine.

:func:`parse_identifier` turns a C-FIND request identifier into the same domain
:class:`~dicomcloud.domain.query.Query` that QIDO-RS builds: each key becomes a
``(keyword, value)`` pair for :func:`~dicomcloud.domain.query.parse_qido`, so the
matching type follows from the value exactly as it does over HTTP.  A key with an
empty value that cannot be matched on (NumberOfStudyRelatedInstances, ...) is a return
key.  :func:`response_identifier` builds one pending response from a search result,
reading every value the way the QIDO-RS renderer does.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from dicomcloud.dicomweb.qido import ReturnAttribute, sections_for
from dicomcloud.dimse.contexts import FIND_SOP_CLASSES
from dicomcloud.domain.extended_tags import ExtendedTag, searchable_at
from dicomcloud.domain.query import Query, QueryError, QueryLevel, parse_qido
from dicomcloud.domain.results import SearchResult
from dicomcloud.services.query import SEARCH_KEYS

__all__ = [
    "PATIENT_ROOT_FIND",
    "STUDY_ROOT_FIND",
    "FindRequest",
    "parse_identifier",
    "response_identifier",
]

#: Patient Root Query/Retrieve Information Model - FIND (PS3.4 C.6.1).
PATIENT_ROOT_FIND: Final = FIND_SOP_CLASSES[0]
#: Study Root Query/Retrieve Information Model - FIND (PS3.4 C.6.2).
STUDY_ROOT_FIND: Final = FIND_SOP_CLASSES[1]

#: The levels of each information model (PS3.4 C.6.1 and C.6.2).
_LEVELS: Final[Mapping[str, frozenset[QueryLevel]]] = {
    PATIENT_ROOT_FIND: frozenset(QueryLevel),
    STUDY_ROOT_FIND: frozenset({QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE}),
}

#: Unique keys returned with every match (PS3.4 C.4.1.1.3.2), per level.
_UNIQUE_KEYS: Final[Mapping[QueryLevel, tuple[str, ...]]] = {
    QueryLevel.PATIENT: ("PatientID",),
    QueryLevel.STUDY: ("StudyInstanceUID",),
    QueryLevel.SERIES: ("StudyInstanceUID", "SeriesInstanceUID"),
    QueryLevel.IMAGE: ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}

#: Not keys: they describe the request itself.
_CONTROL_KEYWORDS: Final = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})
#: QIDO-RS attributes with no meaning over DIMSE.
_HTTP_ONLY: Final = frozenset({"RetrieveURL", "SpecificCharacterSet"})
#: Return keys answered by the SCP itself (PS3.4 C.4.1.1.3.2: where the match can be
#: retrieved from, and that it is online).
_RETRIEVE_AE_TITLE: Final = "RetrieveAETitle"
_INSTANCE_AVAILABILITY: Final = "InstanceAvailability"
_SCP_KEYS: Final = frozenset({_RETRIEVE_AE_TITLE, _INSTANCE_AVAILABILITY})

UTF8_CHARSET: Final = "ISO_IR 192"


@dataclass(frozen=True, slots=True)
class FindRequest:
    """A parsed C-FIND identifier: the query and the keywords to return, in order, and
    the other return keys (tag, VR as requested), answered from each level's stored
    attributes (``dicomcloud.domain.level_json``)."""

    query: Query
    keywords: tuple[str, ...]
    stored: tuple[tuple[int, str], ...] = ()


#: Unique keys of the STUDY, SERIES and IMAGE levels: a query above their level must not
#: carry them (PS3.4 C.4.1.2.2.1), so they stay an error rather than an ignored return key.
_LOWER_UNIQUE_KEYS = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})


def _attributes(level: QueryLevel) -> dict[str, ReturnAttribute]:
    attributes: dict[str, ReturnAttribute] = {}
    for section in sections_for(level, {}):
        attributes.update(section.attributes)
    for keyword in _HTTP_ONLY:
        attributes.pop(keyword, None)
    return attributes


_ATTRIBUTES: Final[Mapping[QueryLevel, Mapping[str, ReturnAttribute]]] = {
    level: _attributes(level) for level in SEARCH_KEYS
}


def _level(identifier: Dataset, sop_class: str) -> QueryLevel:
    text = str(identifier.get("QueryRetrieveLevel", "") or "").strip()
    if not text:
        raise QueryError("QueryRetrieveLevel", "is missing")
    try:
        level = QueryLevel(text)
    except ValueError:
        raise QueryError("QueryRetrieveLevel", f"{text!r} is not a level") from None
    if level not in _LEVELS.get(sop_class, frozenset()):
        raise QueryError("QueryRetrieveLevel", f"{text} is not supported by this model")
    return level


def _text(element: DataElement) -> str:
    """The key's value as QIDO-RS would receive it (PS3.18 8.3.4): text, values joined
    by backslashes, person names with their component groups."""
    if element.VR == "SQ":
        raise QueryError(
            element.keyword or f"{element.tag:08X}",
            "a sequence is matched only on attributes configured as extended query tags "
            "(Sequence.Attribute)",
        )
    value: Any = element.value
    if element.is_empty or value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        raise QueryError(element.keyword or f"{element.tag:08X}", "binary values cannot be matched")
    values = list(value) if isinstance(value, MultiValue) else [value]
    return "\\".join(str(v) for v in values)


def parse_identifier(
    identifier: Dataset, sop_class: str, extended: Sequence[ExtendedTag] = ()
) -> FindRequest:
    """The query of a C-FIND identifier for the information model ``sop_class``;
    ``extended`` are the tenant's extended query tags (matching keys at their level and
    below, returned from the stored attributes).

    Raises :class:`QueryError` for a missing or unsupported level, an unknown key or one
    not available at the level, or a malformed value.
    """
    level = _level(identifier, sop_class)
    known = SEARCH_KEYS[level]
    extra = searchable_at(extended, level)
    attributes = _ATTRIBUTES[level]
    params: list[tuple[str, str]] = []
    keywords: dict[str, None] = {}
    stored: list[tuple[int, str]] = []
    for element in identifier:
        keyword = element.keyword
        if keyword in _CONTROL_KEYWORDS:
            continue
        name = keyword or f"{element.tag:08X}"
        if _is_private_creator(int(element.tag)):
            # It reserves a block of private elements (PS3.5 7.8.1), not a matching
            # key: returned as stored, so the private keys answered keep their creator.
            stored.append((int(element.tag), "LO"))
            continue
        tag = _extended_tag(identifier, element, keyword or name, extra)
        if tag is not None:  # a configured extended query tag
            params.append((tag.key, _extended_text(element)))
            stored.append((int(element.tag), tag.vr))
            continue
        in_sequence = _sequence_keys(element, extra)
        if in_sequence is not None:  # sequence matching (PS3.4 C.2.2.2.6)
            params.extend(in_sequence)
            stored.append((int(element.tag), "SQ"))
            continue
        supported = keyword in _SCP_KEYS or keyword in known or keyword in attributes
        if element.is_empty and not supported and keyword not in _LOWER_UNIQUE_KEYS:
            # A return key that is not indexed (a private tag, a sequence, ...): its
            # value comes from the level's stored attributes, or it is returned empty
            # (PS3.4 C.4.1.1.3.2); never an error, so SCUs asking for more still match.
            stored.append((int(element.tag), str(element.VR)))
            continue
        value = _text(element)
        if keyword in _SCP_KEYS:
            if value:
                raise QueryError(name, "can only be a return key (empty value)")
        elif keyword not in known:
            if keyword not in attributes:
                raise QueryError(name, f"is not a key of the {level.value} level")
            if value:
                raise QueryError(name, f"is not searchable at the {level.value} level")
            params.append(("includefield", keyword))
        else:
            params.append((name, value))
        keywords[keyword] = None
    query = parse_qido(level, params, known=known, extended=extended)
    if stored:
        query = dataclasses.replace(query, with_attributes=True)
    unique = dict.fromkeys(_UNIQUE_KEYS[level])
    return FindRequest(query, tuple({**unique, **keywords}), tuple(stored))


def _is_private_creator(tag: int) -> bool:
    return bool(tag >> 16 & 1) and 0x0010 <= tag & 0xFFFF <= 0x00FF


def _extended_tag(
    identifier: Dataset, element: DataElement, key: str, tags: Sequence[ExtendedTag]
) -> ExtendedTag | None:
    """The extended query tag ``element`` stands for: by keyword or tag, or for a
    private element by its creator's block and element offset (PS3.5 7.8.1)."""
    number = int(element.tag)
    group, offset = number >> 16, number & 0xFFFF
    for tag in tags:
        if tag.private_creator is None:
            if tag.key == key:
                return tag
            continue
        if group != tag.tag >> 16 or offset < 0x1000 or offset & 0xFF != tag.tag & 0xFF:
            continue
        creator = identifier.get((group << 16) | (offset >> 8))
        if creator is not None and str(creator.value).strip() == tag.private_creator:
            return tag
    return None


def _sequence_keys(
    element: DataElement, tags: Sequence[ExtendedTag]
) -> list[tuple[str, str]] | None:
    """The matching keys of a sequence key whose single item holds configured
    extended query tags (``Sequence.Attribute``), as (path, value) pairs; None if the
    element is not such a sequence (PS3.4 C.2.2.2.6: one item, matched by its keys)."""
    if element.VR != "SQ" or not element.keyword or len(element.value or ()) != 1:
        return None
    paths = {tag.key for tag in tags if tag.path}
    keys: list[tuple[str, str]] = []
    for item_element in element.value[0]:
        path = f"{element.keyword}.{item_element.keyword}"
        if path not in paths:
            return None  # not (all) indexed: a return key, answered as stored
        value = _text(item_element)
        if value:
            keys.append((path, value))
    return keys


def _extended_text(element: DataElement) -> str:
    """An extended key's value as text; a private element the identifier's transfer
    syntax left without VR (implicit VR: UN) is read as the text it carries."""
    if element.VR == "UN" and isinstance(element.value, bytes | bytearray):
        return bytes(element.value).decode("ascii", "replace").strip(" \x00")
    return _text(element)


def _element_value(vr: str, value: Any) -> Any:
    if value is None or value == "" or value == ():
        return None
    if isinstance(value, tuple):
        return [str(v) if vr == "PN" else v for v in value]
    return value


def _is_ascii(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_ascii(v) for v in value)
    if isinstance(value, PersonName):
        value = str(value)
    return not isinstance(value, str) or value.isascii()


def response_identifier(
    result: SearchResult, request: FindRequest, retrieve_ae_title: str
) -> Dataset:
    """One pending C-FIND response identifier (PS3.4 C.4.1.1.3.2): QueryRetrieveLevel
    and every requested key with its value (empty when the match has none)."""
    level = request.query.level
    attributes = _ATTRIBUTES[level]
    ds = Dataset()
    ds.QueryRetrieveLevel = level.value
    ascii_only = True
    for keyword in request.keywords:
        tag = tag_for_keyword(keyword)
        assert tag is not None
        if keyword == _RETRIEVE_AE_TITLE:
            ds.add_new(tag, "AE", retrieve_ae_title)
            continue
        if keyword == _INSTANCE_AVAILABILITY:
            ds.add_new(tag, "CS", "ONLINE")
            continue
        attribute = attributes[keyword]
        value = _element_value(attribute.vr, attribute.read(result, ""))
        ascii_only = ascii_only and _is_ascii(value)
        ds.add_new(tag, attribute.vr, value)
    if request.stored:
        ascii_only = _add_stored(ds, result, request) and ascii_only
    if not ascii_only:
        ds.SpecificCharacterSet = UTF8_CHARSET
    return ds


def _add_stored(ds: Dataset, result: SearchResult, request: FindRequest) -> bool:
    """Add the stored return keys to ``ds`` (empty when the match has no value);
    whether their text is ASCII."""
    levels = {level: None for s in sections_for(request.query.level, {}) for level in s.levels}
    found: dict[str, Any] = {}
    for level in levels:
        record = getattr(result, level, None)
        text = None if record is None else getattr(record, "attributes", None)
        if text:
            found.update(json.loads(text))
    ascii_only = True
    for tag, vr in request.stored:
        key = f"{tag:08X}"
        if key in found:
            element = Dataset.from_json({key: found[key]})[tag]
            value = element.value
            ascii_only = ascii_only and _is_ascii(
                list(value) if isinstance(value, MultiValue) else value
            )
            ds.add(element)
        else:
            ds.add_new(tag, vr, None)
    return ascii_only
