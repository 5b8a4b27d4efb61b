"""Viewer-ready copies (``derived_copy``) and failed conversions (``transcode_failure``)
of the transcoder worker, keyed by tenant, SOP Instance UID and transfer syntax.
Self-contained like the others (no import of ``dicomcloud.index.schema``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}
TENANT = 64
UI = 64


def _timestamp() -> sa.types.TypeEngine[Any]:
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _uid(name: str) -> sa.Column[str]:
    kind = sa.String(UI).with_variant(
        mysql.VARCHAR(UI, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
    )
    return sa.Column(name, kind, nullable=False)


def _keys() -> list[sa.Column[Any]]:
    return [
        sa.Column("tenant_id", sa.String(TENANT), nullable=False),
        _uid("sop_instance_uid"),
        _uid("transfer_syntax_uid"),
        _uid("study_instance_uid"),
        _uid("series_instance_uid"),
    ]


def upgrade() -> None:
    op.create_table(
        "derived_copy",
        *_keys(),
        sa.Column("blob_key", sa.String(512), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("source_version", sa.String(64), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "sop_instance_uid", "transfer_syntax_uid", name="pk_derived_copy"
        ),
        **MYSQL,
    )
    op.create_table(
        "transcode_failure",
        *_keys(),
        sa.Column("source_version", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(1024), nullable=False),
        sa.Column("failed_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "sop_instance_uid", "transfer_syntax_uid", name="pk_transcode_failure"
        ),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("transcode_failure")
    op.drop_table("derived_copy")
