"""Pure values and records: no I/O, no frameworks beyond pydicom's data model."""
