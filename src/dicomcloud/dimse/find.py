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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from dicomcloud.dicomweb.qido import ReturnAttribute, sections_for
from dicomcloud.dimse.contexts import FIND_SOP_CLASSES
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

#: The levels each information model supports here.  PATIENT needs a patient search,
#: which the index does not offer yet.
_LEVELS: Final[Mapping[str, frozenset[QueryLevel]]] = {
    PATIENT_ROOT_FIND: frozenset({QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE}),
    STUDY_ROOT_FIND: frozenset({QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE}),
}

#: Unique keys returned with every match (PS3.4 C.4.1.1.3.2), per level.
_UNIQUE_KEYS: Final[Mapping[QueryLevel, tuple[str, ...]]] = {
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
    """A parsed C-FIND identifier: the query and the keywords to return, in order."""

    query: Query
    keywords: tuple[str, ...]


#: Unique keys of the SERIES and IMAGE levels: a query above their level must not carry
#: them (PS3.4 C.4.1.2.2.1), so they stay an error rather than an ignored return key.
_LOWER_UNIQUE_KEYS = frozenset({"SeriesInstanceUID", "SOPInstanceUID"})


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
        raise QueryError(element.keyword or f"{element.tag:08X}", "sequence keys are not supported")
    value: Any = element.value
    if element.is_empty or value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        raise QueryError(element.keyword or f"{element.tag:08X}", "binary values cannot be matched")
    values = list(value) if isinstance(value, MultiValue) else [value]
    return "\\".join(str(v) for v in values)


def parse_identifier(identifier: Dataset, sop_class: str) -> FindRequest:
    """The query of a C-FIND identifier for the information model ``sop_class``.

    Raises :class:`QueryError` for a missing or unsupported level, an unknown key or one
    not available at the level, or a malformed value.
    """
    level = _level(identifier, sop_class)
    known = SEARCH_KEYS[level]
    attributes = _ATTRIBUTES[level]
    params: list[tuple[str, str]] = []
    keywords: dict[str, None] = {}
    for element in identifier:
        keyword = element.keyword
        if keyword in _CONTROL_KEYWORDS:
            continue
        name = keyword or f"{element.tag:08X}"
        supported = keyword in _SCP_KEYS or keyword in known or keyword in attributes
        if element.is_empty and not supported and keyword not in _LOWER_UNIQUE_KEYS:
            # An optional return key this archive does not keep (a private tag, a
            # sequence, ...): it is left out of the responses, not an error, so that
            # SCUs asking for more than we index still get their matches (PS3.4 C.2.2.1).
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
    query = parse_qido(level, params, known=known)
    unique = dict.fromkeys(_UNIQUE_KEYS[level])
    return FindRequest(query, tuple({**unique, **keywords}))


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
    if not ascii_only:
        ds.SpecificCharacterSet = UTF8_CHARSET
    return ds
