"""Interop tier: real peers (dcmtk, dicomweb-client, pynetdicom) against ``dicomcloud serve``."""
