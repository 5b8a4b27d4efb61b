"""Contract tests: every backend of a port, for real (STYLE.md 4 and 16)."""

from backends import index, shared_databases, sql_url  # noqa: F401  (fixtures)
