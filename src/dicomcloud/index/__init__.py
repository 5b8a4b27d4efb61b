"""The relational index (Index port): SQLAlchemy Core adapter for SQLite, PostgreSQL and
MySQL/MariaDB with Alembic migrations, and the in-memory reference implementation."""

from dicomcloud.index.engine import create_engine_for
from dicomcloud.index.memory_index import MemoryIndex
from dicomcloud.index.migrate import migrate
from dicomcloud.index.sql_index import SqlIndex

__all__ = ["MemoryIndex", "SqlIndex", "create_engine_for", "migrate"]
