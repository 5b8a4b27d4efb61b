"""Deployment recipes for dicomcloud (not part of the installed package)."""
