"""QIDO-RS search (PS3.18 10.6): studies, series and instances in DICOM JSON (PS3.18 F.2).

The routes parse the query parameters with ``parse_query`` (UIDs of the request path
become matching keys), call the query service and render each result with the default
return attributes of PS3.18 tables 10.6.3-3/4/5 plus the keys the client matched on or
asked for.  Which tables apply follows 10.6.3: a series search returns the study
attributes too unless the study is in the path; an instance search returns the study and
series attributes of the levels not in the path.  Attributes without a value are left out,
except those the client named: those come back empty (PS3.4 C.2.2.1: every matching key
is returned).  An empty result is ``200`` with ``[]``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydicom.datadict import tag_for_keyword
from starlette.requests import Request
from starlette.responses import Response

from dicomcloud.dicomweb.media import (
    DICOM_JSON,
    DICOM_XML,
    JSON,
    MULTIPART_RELATED,
    parse_accept,
)
from dicomcloud.dicomweb.request_context import archive_of, tenant_of
from dicomcloud.dicomweb.responses import (
    DicomJson,
    element,
    json_to_xml,
    multipart_body,
    warning_header,
)
from dicomcloud.domain.query import Query, QueryError, QueryLevel, match_keywords, parse_qido
from dicomcloud.domain.results import SearchResult
from dicomcloud.errors import BadRequest, NotAcceptable
from dicomcloud.services.query import SEARCH_KEYS

__all__ = [
    "INSTANCE_DEFAULT_ATTRIBUTES",
    "SERIES_DEFAULT_ATTRIBUTES",
    "STUDY_DEFAULT_ATTRIBUTES",
    "Section",
    "parse_query",
    "search_response",
    "sections_for",
]

#: SpecificCharacterSet of every response: the index holds decoded text (PS3.18 F.2).
UTF8_CHARSET: Final = "ISO_IR 192"


@dataclass(frozen=True, slots=True)
class ReturnAttribute:
    """An attribute a search can return: tag, VR and how to read it from a result
    (``StudyResult``, ``SeriesResult`` or ``InstanceResult``) and the base URL."""

    tag: str
    vr: str
    read: Callable[[Any, str], Any]


def _field(level: str, name: str) -> Callable[[Any, str], Any]:
    """Read field ``name`` of the result's record of ``level`` (None: no record)."""

    def read(result: Any, _: str) -> Any:
        record = getattr(result, level, None)
        return None if record is None else getattr(record, name)

    return read


def _study(name: str) -> Callable[[Any, str], Any]:
    return _field("study", name)


def _patient(name: str) -> Callable[[Any, str], Any]:
    return _field("patient", name)


def _series(name: str) -> Callable[[Any, str], Any]:
    return _field("series", name)


def _instance(name: str) -> Callable[[Any, str], Any]:
    return _field("instance", name)


def _charset(result: Any, base: str) -> str:
    return UTF8_CHARSET


#: Patient-level return attributes (PS3.4 C.6.1.1.2; C-FIND Patient Root only: QIDO-RS
#: has no patient resource).
PATIENT_ATTRIBUTES: Final[Mapping[str, ReturnAttribute]] = {
    "PatientName": ReturnAttribute("00100010", "PN", _patient("patient_name")),
    "PatientID": ReturnAttribute("00100020", "LO", _patient("patient_id")),
    "IssuerOfPatientID": ReturnAttribute("00100021", "LO", _patient("issuer_of_patient_id")),
    "PatientBirthDate": ReturnAttribute("00100030", "DA", _patient("patient_birth_date")),
    "PatientBirthTime": ReturnAttribute("00100032", "TM", _patient("patient_birth_time")),
    "PatientSex": ReturnAttribute("00100040", "CS", _patient("patient_sex")),
    "NumberOfPatientRelatedStudies": ReturnAttribute(
        "00201200", "IS", lambda r, _: r.number_of_studies
    ),
    "NumberOfPatientRelatedSeries": ReturnAttribute(
        "00201202", "IS", lambda r, _: r.number_of_series
    ),
    "NumberOfPatientRelatedInstances": ReturnAttribute(
        "00201204", "IS", lambda r, _: r.number_of_instances
    ),
}

#: Study-level return attributes by keyword (PS3.18 table 10.6.3-3; PS3.4 C.6.1.1.3).
STUDY_ATTRIBUTES: Final[Mapping[str, ReturnAttribute]] = {
    "SpecificCharacterSet": ReturnAttribute("00080005", "CS", _charset),
    "StudyDate": ReturnAttribute("00080020", "DA", _study("study_date")),
    "StudyTime": ReturnAttribute("00080030", "TM", _study("study_time")),
    "AccessionNumber": ReturnAttribute("00080050", "SH", _study("accession_number")),
    "ModalitiesInStudy": ReturnAttribute("00080061", "CS", lambda r, _: r.modalities),
    "SOPClassesInStudy": ReturnAttribute("00080062", "UI", lambda r, _: r.sop_classes),
    "ReferringPhysicianName": ReturnAttribute("00080090", "PN", _study("referring_physician_name")),
    "StudyDescription": ReturnAttribute("00081030", "LO", _study("study_description")),
    "RetrieveURL": ReturnAttribute(
        "00081190", "UR", lambda r, base: f"{base}/studies/{r.study.study_instance_uid}"
    ),
    "PatientName": ReturnAttribute("00100010", "PN", _patient("patient_name")),
    "PatientID": ReturnAttribute("00100020", "LO", _study("patient_id")),
    "IssuerOfPatientID": ReturnAttribute("00100021", "LO", _patient("issuer_of_patient_id")),
    "PatientBirthDate": ReturnAttribute("00100030", "DA", _patient("patient_birth_date")),
    "PatientSex": ReturnAttribute("00100040", "CS", _patient("patient_sex")),
    "StudyInstanceUID": ReturnAttribute("0020000D", "UI", _study("study_instance_uid")),
    "StudyID": ReturnAttribute("00200010", "SH", _study("study_id")),
    "NumberOfStudyRelatedSeries": ReturnAttribute(
        "00201206", "IS", lambda r, _: r.number_of_series
    ),
    "NumberOfStudyRelatedInstances": ReturnAttribute(
        "00201208", "IS", lambda r, _: r.number_of_instances
    ),
}

#: Returned for every study without being asked (PS3.18 table 10.6.3-3).
STUDY_DEFAULT_ATTRIBUTES: Final = (
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "RetrieveURL",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)

#: Series-level return attributes (PS3.18 table 10.6.3-4; PS3.4 C.6.1.1.4).
SERIES_ATTRIBUTES: Final[Mapping[str, ReturnAttribute]] = {
    "SpecificCharacterSet": ReturnAttribute("00080005", "CS", _charset),
    "SeriesDate": ReturnAttribute("00080021", "DA", _series("series_date")),
    "SeriesTime": ReturnAttribute("00080031", "TM", _series("series_time")),
    "Modality": ReturnAttribute("00080060", "CS", _series("modality")),
    "SeriesDescription": ReturnAttribute("0008103E", "LO", _series("series_description")),
    "RetrieveURL": ReturnAttribute(
        "00081190",
        "UR",
        lambda r, base: (
            f"{base}/studies/{r.series.study_instance_uid}/series/{r.series.series_instance_uid}"
        ),
    ),
    "BodyPartExamined": ReturnAttribute("00180015", "CS", _series("body_part_examined")),
    "ProtocolName": ReturnAttribute("00181030", "LO", _series("protocol_name")),
    "SeriesInstanceUID": ReturnAttribute("0020000E", "UI", _series("series_instance_uid")),
    "SeriesNumber": ReturnAttribute("00200011", "IS", _series("series_number")),
    "NumberOfSeriesRelatedInstances": ReturnAttribute(
        "00201209", "IS", lambda r, _: getattr(r, "number_of_instances", None)
    ),
    "PerformedProcedureStepStartDate": ReturnAttribute(
        "00400244", "DA", _series("performed_procedure_step_start_date")
    ),
    "PerformedProcedureStepStartTime": ReturnAttribute(
        "00400245", "TM", _series("performed_procedure_step_start_time")
    ),
}

#: Returned for every series without being asked (PS3.18 table 10.6.3-4).
SERIES_DEFAULT_ATTRIBUTES: Final = (
    "SpecificCharacterSet",
    "Modality",
    "SeriesDescription",
    "RetrieveURL",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
)


def _instance_url(result: Any, base: str) -> str:
    i = result.instance
    return (
        f"{base}/studies/{i.study_instance_uid}/series/{i.series_instance_uid}"
        f"/instances/{i.sop_instance_uid}"
    )


#: Instance-level return attributes (PS3.18 table 10.6.3-5; PS3.4 C.6.1.1.5).
INSTANCE_ATTRIBUTES: Final[Mapping[str, ReturnAttribute]] = {
    "SpecificCharacterSet": ReturnAttribute("00080005", "CS", _charset),
    "SOPClassUID": ReturnAttribute("00080016", "UI", _instance("sop_class_uid")),
    "SOPInstanceUID": ReturnAttribute("00080018", "UI", _instance("sop_instance_uid")),
    "ContentDate": ReturnAttribute("00080023", "DA", _instance("content_date")),
    "ContentTime": ReturnAttribute("00080033", "TM", _instance("content_time")),
    "RetrieveURL": ReturnAttribute("00081190", "UR", _instance_url),
    "InstanceNumber": ReturnAttribute("00200013", "IS", _instance("instance_number")),
    "SamplesPerPixel": ReturnAttribute("00280002", "US", _instance("samples_per_pixel")),
    "PhotometricInterpretation": ReturnAttribute(
        "00280004", "CS", _instance("photometric_interpretation")
    ),
    "NumberOfFrames": ReturnAttribute("00280008", "IS", _instance("number_of_frames")),
    "Rows": ReturnAttribute("00280010", "US", _instance("rows")),
    "Columns": ReturnAttribute("00280011", "US", _instance("columns")),
    "BitsAllocated": ReturnAttribute("00280100", "US", _instance("bits_allocated")),
    "BitsStored": ReturnAttribute("00280101", "US", _instance("bits_stored")),
    "HighBit": ReturnAttribute("00280102", "US", _instance("high_bit")),
    "PixelRepresentation": ReturnAttribute("00280103", "US", _instance("pixel_representation")),
}

#: Returned for every instance without being asked (PS3.18 table 10.6.3-5).
INSTANCE_DEFAULT_ATTRIBUTES: Final = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "RetrieveURL",
    "InstanceNumber",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
)

#: Study attributes computed from a study's series and instances: returned by study
#: searches only.
_STUDY_COMPUTED = frozenset(
    {
        "ModalitiesInStudy",
        "SOPClassesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "RetrieveURL",
    }
)


@dataclass(frozen=True, slots=True)
class Section:
    """The attributes one level contributes to a response, its default ones, and the
    records (``levels``) whose stored DICOM JSON answers ``includefield`` beyond them."""

    attributes: Mapping[str, ReturnAttribute]
    defaults: tuple[str, ...]
    levels: tuple[str, ...]


PATIENT_SECTION: Final = Section(PATIENT_ATTRIBUTES, ("PatientName", "PatientID"), ("patient",))
STUDY_SECTION: Final = Section(STUDY_ATTRIBUTES, STUDY_DEFAULT_ATTRIBUTES, ("patient", "study"))
#: The stored study attributes, returned with series and instances (PS3.18 10.6.3).
STUDY_STORED_SECTION: Final = Section(
    {k: v for k, v in STUDY_ATTRIBUTES.items() if k not in _STUDY_COMPUTED},
    tuple(k for k in STUDY_DEFAULT_ATTRIBUTES if k not in _STUDY_COMPUTED),
    ("patient", "study"),
)
SERIES_SECTION: Final = Section(SERIES_ATTRIBUTES, SERIES_DEFAULT_ATTRIBUTES, ("series",))
INSTANCE_SECTION: Final = Section(INSTANCE_ATTRIBUTES, INSTANCE_DEFAULT_ATTRIBUTES, ("instance",))


def sections_for(level: QueryLevel, path: Mapping[str, str]) -> tuple[Section, ...]:
    """What a search at ``level`` returns, given the UIDs in the request path (by
    keyword): the levels above are returned unless the path names them (PS3.18
    10.6.3)."""
    if level is QueryLevel.PATIENT:
        return (PATIENT_SECTION,)
    if level is QueryLevel.STUDY:
        return (STUDY_SECTION,)
    sections: list[Section] = []
    if "StudyInstanceUID" not in path:
        sections.append(STUDY_STORED_SECTION)
    if level is QueryLevel.SERIES:
        return (*sections, SERIES_SECTION)
    if "SeriesInstanceUID" not in path:
        sections.append(SERIES_SECTION)
    return (*sections, INSTANCE_SECTION)


_ACCEPTED = (DICOM_JSON, JSON)
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
#: The XML form of search results: one Native DICOM Model part per match (PS3.18
#: 10.6.3.2, PS3.19 A.1).
MULTIPART_XML: Final = f'{MULTIPART_RELATED}; type="{DICOM_XML}"'
#: PS3.18 8.3.4.4 / 10.6.3.3: what a response says when the server cut it short.
LIMIT_WARNING: Final = (
    "The number of results exceeded the maximum supported by the server. "
    "Additional results can be requested."
)


def parse_query(request: Request, level: QueryLevel, path: Mapping[str, str]) -> Query:
    """The query of a request at ``level``; the UIDs of the path (by keyword, already
    validated) are single value matching keys.  ``BadRequest`` naming what is wrong.
    Asks the index for the stored attributes of each level when ``includefield`` wants
    more than the indexed ones."""
    params = [*path.items(), *request.query_params.multi_items()]
    settings = archive_of(request).settings
    extended = settings.search.extended_tags_of(tenant_of(request))
    try:
        query = parse_qido(level, params, known=SEARCH_KEYS[level], extended=extended)
    except QueryError as exc:
        raise BadRequest(str(exc)) from exc
    indexed = {k for section in sections_for(level, path) for k in section.attributes}
    if query.include_all or query.extended or not indexed.issuperset(query.return_keys):
        query = dataclasses.replace(query, with_attributes=True)
    return query


@dataclass(frozen=True, slots=True)
class Page:
    """The query sent to the index and, when the server caps the response
    (``max_limit``), how many results the response may hold."""

    query: Query
    cap: int | None


def cap_limit(query: Query, max_limit: int) -> Page:
    """Apply the server's maximum to ``query.limit`` (PS3.18 8.3.4.4): a larger or
    absent limit is cut to ``max_limit``, and one more result is asked for to tell
    whether the response was cut short."""
    if query.limit is not None and query.limit <= max_limit:
        return Page(query, None)
    return Page(dataclasses.replace(query, limit=max_limit + 1), max_limit)


def negotiate(request: Request) -> str:
    """The media type of the response (PS3.18 8.7.3, 10.6.3): DICOM JSON, JSON or
    ``multipart/related; type="application/dicom+xml"``; ``NotAcceptable``."""
    for media in parse_accept(request.headers.get("accept")):
        if media.type == MULTIPART_RELATED and media.params.get("type") == DICOM_XML:
            return MULTIPART_XML
        for offered in _ACCEPTED:
            if media.matches(offered):
                return offered
    raise NotAcceptable(
        f"search results are available as {DICOM_JSON}, {JSON} or {MULTIPART_XML}; "
        f"Accept was {request.headers.get('accept')!r}"
    )


def _value(vr: str, value: Any) -> list[Any]:
    if value is None or value == "" or value == ():
        return []
    values = list(value) if isinstance(value, tuple) else [value]
    if vr == "PN":  # PS3.18 F.2.2: component groups by name
        out = []
        for name in values:
            groups = str(name).split("=")
            out.append(
                {label: group for label, group in zip(_PN_GROUPS, groups, strict=False) if group}
            )
        return out
    return values


def _stored(result: SearchResult, levels: Sequence[str], tags: set[str] | None) -> DicomJson:
    """The stored DICOM JSON of the result's records of ``levels`` (only ``tags``
    unless None)."""
    found: DicomJson = {}
    for level in levels:
        record = getattr(result, level, None)
        text = None if record is None else getattr(record, "attributes", None)
        if not text:
            continue
        stored: DicomJson = json.loads(text)
        found.update(stored if tags is None else {t: stored[t] for t in tags & stored.keys()})
    return found


def result_json(
    result: SearchResult,
    attributes: Mapping[str, ReturnAttribute],
    keywords: Sequence[str],
    named: set[str],
    base: str,
    stored: DicomJson | None = None,
) -> DicomJson:
    """One result as a DICOM JSON object, tags in ascending order (PS3.18 F.2.1): the
    indexed ``attributes`` over the ``stored`` ones."""
    dataset: DicomJson = dict(stored or {})
    for keyword in keywords:
        attribute = attributes[keyword]
        values = _value(attribute.vr, attribute.read(result, base))
        if values or keyword in named:
            dataset[attribute.tag] = element(attribute.vr, *values)
    return dict(sorted(dataset.items()))


def _tag(keyword: str) -> str:
    """The tag of a return key: a keyword, or a private tag's eight hex digits."""
    if len(keyword) == 8 and all(c in "0123456789ABCDEF" for c in keyword):
        return keyword
    tag = tag_for_keyword(keyword)
    assert tag is not None  # keywords come from resolve_keyword
    return f"{tag:08X}"


def search_response(
    results: Sequence[SearchResult],
    query: Query,
    sections: Sequence[Section],
    media_type: str,
    base_url: str,
    *,
    cap: int | None = None,
) -> Response:
    """The results as a JSON array (PS3.18 10.6.3; ``[]`` when nothing matched) or as
    XML parts, with the attributes of ``sections`` (a later section's attribute wins on
    a keyword) and, for ``includefield``, the stored attributes of their levels.  With
    more than ``cap`` results the response holds ``cap`` and a Warning header
    (PS3.18 8.3.4.4)."""
    headers: dict[str, str] = {}
    if cap is not None and len(results) > cap:
        results = results[:cap]
        headers["Warning"] = warning_header(LIMIT_WARNING)
    named = {k for node in query.matches for k in match_keywords(node)} | set(query.return_keys)
    attributes: dict[str, ReturnAttribute] = {}
    defaults: dict[str, None] = {}
    levels: dict[str, None] = {}
    for section in sections:
        attributes.update(section.attributes)
        defaults.update(dict.fromkeys(section.defaults))
        levels.update(dict.fromkeys(section.levels))
    extra = attributes.keys() if query.include_all else named
    keywords = (*defaults, *(k for k in attributes if k in extra and k not in defaults))
    wanted = (
        None
        if query.include_all
        else {_tag(k) for k in query.return_keys} | {tag.hex for tag in query.extended}
    )
    body = [
        result_json(
            result,
            attributes,
            keywords,
            named,
            base_url,
            _stored(result, tuple(levels), wanted) if query.with_attributes else None,
        )
        for result in results
    ]
    if media_type == MULTIPART_XML:
        parts = [json_to_xml(dataset).encode("utf-8") for dataset in body]
        content, content_type = multipart_body(parts, DICOM_XML)
        return Response(content, 200, headers, media_type=content_type)
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return Response(text, 200, headers, media_type=media_type)
