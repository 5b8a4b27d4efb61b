"""Extended query tags: the values of the attributes a tenant configured as searchable
(``dicomcloud.domain.extended_tags``), one row per value, found by tag and value.
Self-contained like the others (no import of ``dicomcloud.index.schema``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}
TENANT, UI, LO, EXTENDED_VALUE = 64, 64, 64, 256


def upgrade() -> None:
    op.create_table(
        "extended_tag_value",
        sa.Column("tenant_id", sa.String(TENANT), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column(
            "uid",
            sa.String(UI).with_variant(
                mysql.VARCHAR(UI, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
            ),
            nullable=False,
        ),
        sa.Column("tag", sa.String(LO), nullable=False),
        sa.Column("value_string", sa.String(EXTENDED_VALUE), nullable=False),
        sa.Column("value_number", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint(
            "tenant_id", "level", "uid", "tag", "value_string", name="pk_extended_tag_value"
        ),
        **MYSQL,
    )
    op.create_index(
        "ix_extended_tag_value_tenant_id_tag_value_string",
        "extended_tag_value",
        ["tenant_id", "tag", "value_string"],
    )
    op.create_index(
        "ix_extended_tag_value_tenant_id_tag_value_number",
        "extended_tag_value",
        ["tenant_id", "tag", "value_number"],
    )


def downgrade() -> None:
    op.drop_table("extended_tag_value")
