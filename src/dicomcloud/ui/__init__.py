"""The study browser and the OHIF viewer served by ``dicomcloud serve``."""
