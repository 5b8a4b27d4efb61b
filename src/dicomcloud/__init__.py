"""dicomcloud: an open-source cloud DICOM archive (DICOMweb and DIMSE)."""

__version__ = "0.1.0"
