"""Fuzzy matching of PN-valued extended query tags: a folded copy of each person name
value (``extended_tag_value.value_folded``, PS3.4 C.2.2.2.6), as the ``*_fuzzy`` columns
of migration 0002 for PatientName.  NULL for other VRs and for rows stored before;
``dicomcloud reindex`` fills it, and until then fuzzy matching falls back to ``lower()``.
Self-contained like the others (no import of ``dicomcloud.index.schema``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOLDED_EXTENDED_VALUE = 2 * 256


def upgrade() -> None:
    with op.batch_alter_table("extended_tag_value") as batch:
        batch.add_column(sa.Column("value_folded", sa.String(FOLDED_EXTENDED_VALUE), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("extended_tag_value") as batch:
        batch.drop_column("value_folded")
