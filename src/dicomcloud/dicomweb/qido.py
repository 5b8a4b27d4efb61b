"""QIDO-RS search (PS3.18 10.6): ``GET /studies`` answered in DICOM JSON (PS3.18 F.2).

The route parses the query parameters with ``parse_qido``, calls the query service and
renders each study with the default return attributes of PS3.18 table 10.6.3-3 plus the
keys the client matched on or asked for.  Attributes without a value are left out,
except those the client named: those come back empty (PS3.4 C.2.2.1: every matching key
is returned).  An empty result is ``200`` with ``[]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from dicomcloud.dicomweb.media import DICOM_JSON, JSON, parse_accept
from dicomcloud.dicomweb.responses import DicomJson, element
from dicomcloud.domain.query import Query, QueryError, QueryLevel, parse_qido
from dicomcloud.domain.results import StudyResult
from dicomcloud.errors import BadRequest, NotAcceptable
from dicomcloud.services.query import STUDY_SEARCH_KEYS

__all__ = ["STUDY_DEFAULT_ATTRIBUTES", "parse_study_query", "search_studies_response"]

#: SpecificCharacterSet of every response: the index holds decoded text (PS3.18 F.2).
UTF8_CHARSET: Final = "ISO_IR 192"


@dataclass(frozen=True, slots=True)
class ReturnAttribute:
    """An attribute a study search can return: tag, VR and how to read it."""

    tag: str
    vr: str
    read: Callable[[StudyResult, str], Any]


def _study(name: str) -> Callable[[StudyResult, str], Any]:
    return lambda r, _: getattr(r.study, name)


def _patient(name: str) -> Callable[[StudyResult, str], Any]:
    return lambda r, _: None if r.patient is None else getattr(r.patient, name)


#: Study-level return attributes by keyword (PS3.18 table 10.6.3-3; PS3.4 C.6.1.1.3).
STUDY_ATTRIBUTES: Final[Mapping[str, ReturnAttribute]] = {
    "SpecificCharacterSet": ReturnAttribute("00080005", "CS", lambda r, _: UTF8_CHARSET),
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

_ACCEPTED = (DICOM_JSON, JSON)
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def parse_study_query(request: Request) -> Query:
    """The study-level query of a request; ``BadRequest`` naming what is wrong."""
    try:
        return parse_qido(
            QueryLevel.STUDY, request.query_params.multi_items(), known=STUDY_SEARCH_KEYS
        )
    except QueryError as exc:
        raise BadRequest(str(exc)) from exc


def negotiate(request: Request) -> str:
    """The media type of the response (PS3.18 8.7.3, 10.6.3); ``NotAcceptable``."""
    for media in parse_accept(request.headers.get("accept")):
        for offered in _ACCEPTED:
            if media.matches(offered):
                return offered
    raise NotAcceptable(
        f"search results are available as {DICOM_JSON} or {JSON}; "
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


def study_json(
    result: StudyResult, keywords: tuple[str, ...], named: set[str], base: str
) -> DicomJson:
    """One study as a DICOM JSON object, tags in ascending order (PS3.18 F.2.1)."""
    dataset: DicomJson = {}
    for keyword in keywords:
        attribute = STUDY_ATTRIBUTES[keyword]
        values = _value(attribute.vr, attribute.read(result, base))
        if values or keyword in named:
            dataset[attribute.tag] = element(attribute.vr, *values)
    return dict(sorted(dataset.items()))


def search_studies_response(
    results: list[StudyResult], query: Query, media_type: str, base_url: str
) -> Response:
    """The results as a JSON array (PS3.18 10.6.3; ``[]`` when nothing matched)."""
    named = {node.keyword for node in query.matches} | set(query.return_keys)
    extra = STUDY_ATTRIBUTES.keys() if query.include_all else named
    keywords = (
        *STUDY_DEFAULT_ATTRIBUTES,
        *(k for k in STUDY_ATTRIBUTES if k in extra and k not in STUDY_DEFAULT_ATTRIBUTES),
    )
    body = [study_json(result, keywords, named, base_url) for result in results]
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return Response(text, 200, media_type=media_type)
