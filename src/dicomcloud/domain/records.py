"""Index records for the four levels of the DICOM information model (PS3.3 A.1.2).

These are the Python form of the seed's ``DicomStateMeta`` (patient, study and series
attributes) and ``DicomImageMeta`` (instance attributes).  Every record carries
``tenant_id``; every index key starts with it.

Conventions for values, shared by every backend:

* strings are Python ``str`` already decoded from their SpecificCharacterSet, with
  leading/trailing padding removed and clipped to the VR length of PS3.5 6.2;
* multi-valued strings keep DICOM's backslash separator (``ORIGINAL\\PRIMARY``);
* DA values are normalised ``YYYYMMDD`` strings, TM values ``HHMMSS[.FFFFFF]``
  (padded to at least HHMMSS), so that range matching is a string comparison;
* ``None`` means "absent or empty" (Type 2 attributes that were sent empty included).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from dicomcloud.domain.patterns import fold

#: Longest folded person name kept (two characters per PN character: folding may
#: expand, e.g. "ß" -> "ss"); the index column has this length.
FOLDED_PN_LENGTH = 2 * (64 * 3 + 2)


def folded_name(name: str | None) -> str | None:
    """The fuzzy-matching form of a PN value (``dicomcloud.domain.patterns.fold``)."""
    return None if name is None else fold(name)[:FOLDED_PN_LENGTH]


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """Patient-level attributes (PS3.4 C.6.1.1.2)."""

    tenant_id: str
    patient_id: str  # (0010,0020); "" when the instance has none
    issuer_of_patient_id: str | None = None  # (0010,0021)
    patient_name: str | None = None  # (0010,0010) PN, groups joined by "="
    patient_birth_date: str | None = None  # (0010,0030) DA
    patient_birth_time: str | None = None  # (0010,0032) TM
    patient_sex: str | None = None  # (0010,0040) CS
    #: derived from patient_name (any value given is replaced): fuzzy matching
    patient_name_fuzzy: str | None = None
    #: DICOM JSON (PS3.18 F.2) of this level's attributes, bulk data left out
    #: (``dicomcloud.domain.level_json``): QIDO-RS ``includefield`` without the file
    attributes: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "patient_name_fuzzy", folded_name(self.patient_name))


@dataclass(frozen=True, slots=True)
class StudyRecord:
    """Study-level attributes (PS3.4 C.6.1.1.3, PS3.18 table 10.6.3-3)."""

    tenant_id: str
    study_instance_uid: str  # (0020,000D)
    patient_id: str  # link to PatientRecord
    study_date: str | None = None  # (0008,0020) DA
    study_time: str | None = None  # (0008,0030) TM
    accession_number: str | None = None  # (0008,0050) SH
    study_id: str | None = None  # (0020,0010) SH
    study_description: str | None = None  # (0008,1030) LO
    referring_physician_name: str | None = None  # (0008,0090) PN
    patient_age: str | None = None  # (0010,1010) AS
    patient_size: float | None = None  # (0010,1020) DS
    patient_weight: float | None = None  # (0010,1030) DS
    #: derived from referring_physician_name (any value given is replaced)
    referring_physician_name_fuzzy: str | None = None
    #: DICOM JSON (PS3.18 F.2) of this level's attributes, bulk data left out
    #: (``dicomcloud.domain.level_json``): QIDO-RS ``includefield`` without the file
    attributes: str | None = None

    def __post_init__(self) -> None:
        folded = folded_name(self.referring_physician_name)
        object.__setattr__(self, "referring_physician_name_fuzzy", folded)


@dataclass(frozen=True, slots=True)
class SeriesRecord:
    """Series-level attributes (PS3.4 C.6.1.1.4, PS3.18 table 10.6.3-4)."""

    tenant_id: str
    study_instance_uid: str
    series_instance_uid: str  # (0020,000E)
    modality: str | None = None  # (0008,0060) CS
    series_number: int | None = None  # (0020,0011) IS
    series_date: str | None = None  # (0008,0021) DA
    series_time: str | None = None  # (0008,0031) TM
    series_description: str | None = None  # (0008,103E) LO
    body_part_examined: str | None = None  # (0018,0015) CS
    protocol_name: str | None = None  # (0018,1030) LO
    performed_procedure_step_start_date: str | None = None  # (0040,0244) DA
    performed_procedure_step_start_time: str | None = None  # (0040,0245) TM
    #: DICOM JSON (PS3.18 F.2) of this level's attributes, bulk data left out
    #: (``dicomcloud.domain.level_json``): QIDO-RS ``includefield`` without the file
    attributes: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """Instance-level attributes (PS3.4 C.6.1.1.5, PS3.18 table 10.6.3-5) and where the
    stored object lives."""

    tenant_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str  # (0008,0018)
    sop_class_uid: str  # (0008,0016)
    transfer_syntax_uid: str  # (0002,0010) of the stored file
    blob_key: str = ""  # where the BlobStore keeps the Part-10 file
    size: int = 0  # bytes of the stored file
    instance_number: int | None = None  # (0020,0013) IS
    content_date: str | None = None  # (0008,0023) DA
    content_time: str | None = None  # (0008,0033) TM
    number_of_frames: int | None = None  # (0028,0008) IS
    rows: int | None = None  # (0028,0010) US
    columns: int | None = None  # (0028,0011) US
    bits_allocated: int | None = None  # (0028,0100)
    bits_stored: int | None = None  # (0028,0101)
    high_bit: int | None = None  # (0028,0102)
    pixel_representation: int | None = None  # (0028,0103)
    samples_per_pixel: int | None = None  # (0028,0002)
    photometric_interpretation: str | None = None  # (0028,0004) CS
    image_type: str | None = None  # (0008,0008) CS, multi-valued
    image_orientation_patient: str | None = None  # (0020,0037) DS, multi-valued
    image_position_patient: str | None = None  # (0020,0032) DS, multi-valued
    slice_thickness: float | None = None  # (0018,0050) DS
    spacing_between_slices: float | None = None  # (0018,0088) DS
    slice_location: float | None = None  # (0020,1041) DS
    rescale_intercept: float | None = None  # (0028,1052) DS
    rescale_slope: float | None = None  # (0028,1053) DS
    rescale_type: str | None = None  # (0028,1054) LO
    window_center: str | None = None  # (0028,1050) DS, multi-valued
    window_width: str | None = None  # (0028,1051) DS, multi-valued
    #: DICOM JSON (PS3.18 F.2) of this level's attributes, bulk data left out
    #: (``dicomcloud.domain.level_json``): QIDO-RS ``includefield`` without the file
    attributes: str | None = None


@dataclass(frozen=True, slots=True)
class ExtractionWarning:
    """A descriptive value that was not indexed as sent (the stored file keeps it)."""

    keyword: str
    reason: str


@dataclass(frozen=True, slots=True)
class ExtractedInstance:
    """Everything the index needs from one dataset, plus what was clipped on the way."""

    patient: PatientRecord
    study: StudyRecord
    series: SeriesRecord
    instance: InstanceRecord
    warnings: tuple[ExtractionWarning, ...] = field(default_factory=tuple)


class DuplicatePolicy(StrEnum):
    """What to do when a SOP Instance UID is already stored (for the same tenant)."""

    #: Keep the stored instance, report the new one as a duplicate (warning, not error).
    KEEP_FIRST = "keep-first"
    #: Replace the stored instance with the new one.
    REPLACE = "replace"


class StoreOutcome(StrEnum):
    """Result of indexing one instance."""

    STORED = "stored"  # new instance
    REPLACED = "replaced"  # existing instance replaced (policy REPLACE)
    DUPLICATE = "duplicate"  # existing instance kept, new one discarded (KEEP_FIRST)
