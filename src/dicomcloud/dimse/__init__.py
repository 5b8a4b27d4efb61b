"""DIMSE (PS3.7) services over the DICOM upper layer (PS3.8), with pynetdicom."""
