"""Search results and where each searchable attribute lives (PS3.18 10.6.3, PS3.4 C.6.1).

A :class:`StudyResult` is one study found by a study-level search: the indexed study and
patient records plus the computed attributes of PS3.18 table 10.6.3-3.  ``STUDY_FIELDS``
maps each study-level matching key to the record field that holds it, so that every
index backend compiles the same query tree against the same data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from dicomcloud.domain.records import PatientRecord, StudyRecord

__all__ = ["MODALITIES_IN_STUDY", "PN", "STUDY_FIELDS", "FieldRef", "StudyResult"]

#: Which record holds an attribute: the study itself or its patient.
RecordLevel = Literal["patient", "study"]


@dataclass(frozen=True, slots=True)
class FieldRef:
    """The record (``level``) and field (``name``) that store one attribute of VR
    ``vr`` (PS3.6)."""

    level: RecordLevel
    name: str
    vr: str


#: Value Representation of person names (PS3.5 6.2): matched per component group.
PN: Final = "PN"

#: ModalitiesInStudy (0008,0061) is not stored on the study: a study matches when one of
#: its series has a matching Modality (PS3.4 C.6.1.1.3.1).
MODALITIES_IN_STUDY: Final = "ModalitiesInStudy"

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
