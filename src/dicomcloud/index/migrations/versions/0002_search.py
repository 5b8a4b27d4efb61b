"""Search: folded person names for fuzzy matching (PS3.4 C.2.2.2.6) and each level's
attributes as DICOM JSON for QIDO-RS ``includefield`` (PS3.18 8.3.4.3).

Every new column is nullable: rows bulk-loaded without them still match (the query
compiler falls back to ``lower()`` for a missing folded name).  Self-contained like 0001.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOLDED_PN = 2 * 194
LEVELS = ("patient", "study", "series", "instance")


def _attributes() -> sa.Column[str]:
    kind = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
    return sa.Column("attributes", kind, nullable=True)


def upgrade() -> None:
    op.add_column("patient", sa.Column("patient_name_fuzzy", sa.String(FOLDED_PN), nullable=True))
    op.add_column(
        "study",
        sa.Column("referring_physician_name_fuzzy", sa.String(FOLDED_PN), nullable=True),
    )
    for table in LEVELS:
        op.add_column(table, _attributes())


def downgrade() -> None:
    for table in reversed(LEVELS):
        op.drop_column(table, "attributes")
    op.drop_column("study", "referring_physician_name_fuzzy")
    op.drop_column("patient", "patient_name_fuzzy")
