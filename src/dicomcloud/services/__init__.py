"""Use-cases shared by every transport: ingest, retrieve (and later query)."""
