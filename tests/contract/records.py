"""Builders of index writes for the contract tests (no DICOM parsing involved)."""

from __future__ import annotations

import dataclasses
from typing import Any

from dicomcloud.domain.events import StoredEvent, utc_now_iso, uuid7
from dicomcloud.domain.records import (
    DuplicatePolicy,
    ExtractedInstance,
    InstanceRecord,
    PatientRecord,
    SeriesRecord,
    StudyRecord,
)
from dicomcloud.ports import InstanceWrite

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.1.1"


def sop_uid(n: int, series: str = SERIES) -> str:
    return f"{series}.{n}"


def write(
    sop: str,
    *,
    tenant: str = "t1",
    study: str = STUDY,
    series: str = SERIES,
    patient_id: str = "PAT-1",
    policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST,
    patient: dict[str, Any] | None = None,
    study_attrs: dict[str, Any] | None = None,
    series_attrs: dict[str, Any] | None = None,
    **instance_attrs: Any,
) -> InstanceWrite:
    """One write; keyword arguments override InstanceRecord fields."""
    instance = InstanceRecord(
        tenant_id=tenant,
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid=CT_IMAGE,
        transfer_syntax_uid=EXPLICIT_LE,
        blob_key=f"{tenant}/{study}/{series}/{sop}.dcm",
        size=1234,
    )
    instance = dataclasses.replace(instance, **instance_attrs)
    extracted = ExtractedInstance(
        patient=PatientRecord(tenant_id=tenant, patient_id=patient_id, **(patient or {})),
        study=StudyRecord(
            tenant_id=tenant,
            study_instance_uid=study,
            patient_id=patient_id,
            **(study_attrs or {}),
        ),
        series=SeriesRecord(
            tenant_id=tenant,
            study_instance_uid=study,
            series_instance_uid=series,
            **(series_attrs or {}),
        ),
        instance=instance,
    )
    event = StoredEvent(
        event_id=str(uuid7()),
        tenant_id=tenant,
        patient_id=patient_id,
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid=instance.sop_class_uid,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        blob_key=instance.blob_key,
        file_size=instance.size,
        number_of_frames=instance.number_of_frames,
        accession_number=(study_attrs or {}).get("accession_number"),
        study_date=(study_attrs or {}).get("study_date"),
        source="STOW-RS",
        source_ip="127.0.0.1",
        source_ae=None,
        replaced=False,
        stored_at=utc_now_iso(),
    )
    return InstanceWrite(extracted=extracted, event=event, policy=policy)


FULL_INSTANCE: dict[str, Any] = {
    "size": 5_000_000_123,  # beyond 32 bits
    "instance_number": 42,
    "content_date": "20240229",
    "content_time": "235959.123456",
    "number_of_frames": 3,
    "rows": 512,
    "columns": 512,
    "bits_allocated": 16,
    "bits_stored": 12,
    "high_bit": 11,
    "pixel_representation": 1,
    "samples_per_pixel": 1,
    "photometric_interpretation": "MONOCHROME2",
    "image_type": "ORIGINAL\\PRIMARY\\AXIAL",
    "image_orientation_patient": "1\\0\\0\\0\\1\\0",
    "image_position_patient": "-125.5\\-130.25\\77.125",
    "slice_thickness": 0.625,
    "spacing_between_slices": 1.0 / 3.0,
    "slice_location": -1234.56789012345,
    "rescale_intercept": -1024.0,
    "rescale_slope": 1.0000001,
    "rescale_type": "HU",
    "window_center": "40\\400",
    "window_width": "350\\1500",
}
