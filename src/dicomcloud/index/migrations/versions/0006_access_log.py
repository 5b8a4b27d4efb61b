"""The access log (audit trail): one row per DICOMweb request and per DIMSE association
or operation (``dicomcloud.domain.access.AccessRecord``), found by tenant and time.
Self-contained like the others (no import of ``dicomcloud.index.schema``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}
TENANT = 64


def _timestamp() -> sa.types.TypeEngine[Any]:
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _text(name: str, length: int) -> sa.Column[str]:
    return sa.Column(name, sa.String(length), nullable=True)


def upgrade() -> None:
    op.create_table(
        "access_log",
        sa.Column("tenant_id", sa.String(TENANT), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("time", _timestamp(), nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("protocol", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("principal", sa.String(256), nullable=False),
        _text("peer", 64),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("duration_ms", sa.Double(), nullable=False),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        _text("method", 16),
        _text("path", 1024),
        _text("query", 2048),
        _text("user_agent", 512),
        _text("called_ae", 16),
        sa.Column("study_uids", sa.Text(), nullable=True),
        sa.Column("series_uids", sa.Text(), nullable=True),
        sa.Column("sop_instance_uids", sa.Text(), nullable=True),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("operations", sa.Integer(), nullable=False),
        _text("detail", 1024),
        sa.PrimaryKeyConstraint("tenant_id", "event_id", name="pk_access_log"),
        **MYSQL,
    )
    op.create_index("ix_access_log_tenant_id_time", "access_log", ["tenant_id", "time"])
    op.create_index("ix_access_log_time", "access_log", ["time"])


def downgrade() -> None:
    op.drop_table("access_log")
