"""Search results and where each searchable attribute lives (PS3.18 10.6.3, PS3.4 C.6.1).

A :class:`StudyResult` is one study found by a study-level search: the indexed study and
patient records plus the computed attributes of PS3.18 table 10.6.3-3;
:class:`SeriesResult` and :class:`InstanceResult` are the same for the series and
instance levels (tables 10.6.3-4 and 10.6.3-5), with the records of every level above.
``LEVEL_FIELDS`` maps each matching key of a level to the record field that holds it, so
that every index backend compiles the same query tree against the same data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from dicomcloud.domain.query import QueryLevel
from dicomcloud.domain.records import InstanceRecord, PatientRecord, SeriesRecord, StudyRecord

__all__ = [
    "FOLDED",
    "INSTANCE_FIELDS",
    "LEVEL_FIELDS",
    "MODALITIES_IN_STUDY",
    "PATIENT_FIELDS",
    "PN",
    "SERIES_FIELDS",
    "STUDY_FIELDS",
    "FieldRef",
    "InstanceResult",
    "PatientResult",
    "SearchResult",
    "SeriesResult",
    "StudyResult",
]

#: Which record holds an attribute; also the attribute name of that record on a result.
RecordLevel = Literal["patient", "study", "series", "instance"]


@dataclass(frozen=True, slots=True)
class FieldRef:
    """The record (``level``) and field (``name``) that store one attribute of VR
    ``vr`` (PS3.6)."""

    level: RecordLevel
    name: str
    vr: str


#: Value Representation of person names (PS3.5 6.2): matched per component group.
PN: Final = "PN"

#: A PN field ``name`` has its folded form (fuzzy matching) in field ``name + FOLDED``.
FOLDED: Final = "_fuzzy"

#: ModalitiesInStudy (0008,0061) is not stored on the study: a study matches when one of
#: its series has a matching Modality (PS3.4 C.6.1.1.3.1).
MODALITIES_IN_STUDY: Final = "ModalitiesInStudy"

#: Patient-level matching keys (PS3.4 C.6.1.1.2, Patient Root only).
PATIENT_FIELDS: Final[Mapping[str, FieldRef]] = {
    "PatientName": FieldRef("patient", "patient_name", "PN"),
    "PatientID": FieldRef("patient", "patient_id", "LO"),
    "IssuerOfPatientID": FieldRef("patient", "issuer_of_patient_id", "LO"),
    "PatientBirthDate": FieldRef("patient", "patient_birth_date", "DA"),
    "PatientBirthTime": FieldRef("patient", "patient_birth_time", "TM"),
    "PatientSex": FieldRef("patient", "patient_sex", "CS"),
}

#: Study-level matching keys stored on the study or patient records (PS3.4 C.6.1.1.2/3).
STUDY_FIELDS: Final[Mapping[str, FieldRef]] = {
    "StudyInstanceUID": FieldRef("study", "study_instance_uid", "UI"),
    "StudyDate": FieldRef("study", "study_date", "DA"),
    "StudyTime": FieldRef("study", "study_time", "TM"),
    "AccessionNumber": FieldRef("study", "accession_number", "SH"),
    "StudyID": FieldRef("study", "study_id", "SH"),
    "StudyDescription": FieldRef("study", "study_description", "LO"),
    "ReferringPhysicianName": FieldRef("study", "referring_physician_name", "PN"),
    "PatientID": FieldRef("study", "patient_id", "LO"),
    "PatientName": FieldRef("patient", "patient_name", "PN"),
    "IssuerOfPatientID": FieldRef("patient", "issuer_of_patient_id", "LO"),
    "PatientBirthDate": FieldRef("patient", "patient_birth_date", "DA"),
    "PatientSex": FieldRef("patient", "patient_sex", "CS"),
}

#: Series-level matching keys (PS3.4 C.6.1.1.4, PS3.18 table 10.6.3-4).
SERIES_FIELDS: Final[Mapping[str, FieldRef]] = {
    "SeriesInstanceUID": FieldRef("series", "series_instance_uid", "UI"),
    "Modality": FieldRef("series", "modality", "CS"),
    "SeriesNumber": FieldRef("series", "series_number", "IS"),
    "SeriesDate": FieldRef("series", "series_date", "DA"),
    "SeriesTime": FieldRef("series", "series_time", "TM"),
    "SeriesDescription": FieldRef("series", "series_description", "LO"),
    "BodyPartExamined": FieldRef("series", "body_part_examined", "CS"),
    "ProtocolName": FieldRef("series", "protocol_name", "LO"),
    "PerformedProcedureStepStartDate": FieldRef(
        "series", "performed_procedure_step_start_date", "DA"
    ),
    "PerformedProcedureStepStartTime": FieldRef(
        "series", "performed_procedure_step_start_time", "TM"
    ),
}

#: Instance-level matching keys (PS3.4 C.6.1.1.5, PS3.18 table 10.6.3-5).
INSTANCE_FIELDS: Final[Mapping[str, FieldRef]] = {
    "SOPInstanceUID": FieldRef("instance", "sop_instance_uid", "UI"),
    "SOPClassUID": FieldRef("instance", "sop_class_uid", "UI"),
    "InstanceNumber": FieldRef("instance", "instance_number", "IS"),
    "ContentDate": FieldRef("instance", "content_date", "DA"),
    "ContentTime": FieldRef("instance", "content_time", "TM"),
    "NumberOfFrames": FieldRef("instance", "number_of_frames", "IS"),
    "Rows": FieldRef("instance", "rows", "US"),
    "Columns": FieldRef("instance", "columns", "US"),
    "BitsAllocated": FieldRef("instance", "bits_allocated", "US"),
    "PhotometricInterpretation": FieldRef("instance", "photometric_interpretation", "CS"),
}

#: The stored matching keys of each level: a series or instance search may also match
#: on the attributes of the levels above (PS3.18 10.6.1.2, PS3.4 C.2.2.1 relational).
LEVEL_FIELDS: Final[Mapping[QueryLevel, Mapping[str, FieldRef]]] = {
    QueryLevel.PATIENT: PATIENT_FIELDS,
    QueryLevel.STUDY: STUDY_FIELDS,
    QueryLevel.SERIES: {**STUDY_FIELDS, **SERIES_FIELDS},
    QueryLevel.IMAGE: {**STUDY_FIELDS, **SERIES_FIELDS, **INSTANCE_FIELDS},
}


@dataclass(frozen=True, slots=True)
class PatientResult:
    """One patient of a PATIENT-level C-FIND (PS3.4 C.6.1.1.2) with the computed
    NumberOfPatientRelatedStudies, -Series and -Instances (PS3.4 C.3.2)."""

    patient: PatientRecord
    number_of_studies: int
    number_of_series: int
    number_of_instances: int


@dataclass(frozen=True, slots=True)
class StudyResult:
    """One study of a study-level search (PS3.18 table 10.6.3-3).

    ``patient`` is None only if the study's patient row is missing.  ``modalities`` are
    the distinct Modality values of the study's series and ``sop_classes`` the distinct
    SOP Class UIDs of its instances, both sorted.
    """

    study: StudyRecord
    patient: PatientRecord | None
    number_of_series: int
    number_of_instances: int
    modalities: tuple[str, ...]
    sop_classes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SeriesResult:
    """One series of a series-level search (PS3.18 table 10.6.3-4), with its study and
    patient; ``number_of_instances`` is NumberOfSeriesRelatedInstances."""

    series: SeriesRecord
    study: StudyRecord
    patient: PatientRecord | None
    number_of_instances: int


@dataclass(frozen=True, slots=True)
class InstanceResult:
    """One instance of an instance-level search (PS3.18 table 10.6.3-5), with its series,
    study and patient."""

    instance: InstanceRecord
    series: SeriesRecord
    study: StudyRecord
    patient: PatientRecord | None


#: Any one result of a search.
SearchResult = PatientResult | StudyResult | SeriesResult | InstanceResult
