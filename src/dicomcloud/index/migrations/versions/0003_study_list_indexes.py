"""Indexes for study lists at hospital scale (measured in docs/performance.md, "Search
at scale"): an index in the study-list order (StudyDate newest first, undated last, then
StudyInstanceUID by code point), so that a page of a long list is read in order instead
of sorting every matching study; and series by (study, modality) so that
ModalitiesInStudy is answered from the index alone.

The list-order index is an expression index on PostgreSQL and SQLite; MySQL/MariaDB have
no portable equivalent (MariaDB 10.11 has no functional key parts) and keep the plain
``(tenant_id, study_date)`` index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIST_ORDER = "ix_study_list_order"

_LIST_ORDER_SQL = {
    "postgresql": (
        f"CREATE INDEX {LIST_ORDER} ON study "
        '(tenant_id, (study_date IS NULL), study_date DESC, (study_instance_uid COLLATE "C"))'
    ),
    "sqlite": (
        f"CREATE INDEX {LIST_ORDER} ON study "
        "(tenant_id, study_date IS NULL, study_date DESC, study_instance_uid)"
    ),
}


def upgrade() -> None:
    op.create_index(
        "ix_series_tenant_id_study_instance_uid_modality",
        "series",
        ["tenant_id", "study_instance_uid", "modality"],
    )
    op.drop_index("ix_series_tenant_id_study_instance_uid", table_name="series")
    statement = _LIST_ORDER_SQL.get(op.get_bind().dialect.name)
    if statement is not None:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name in _LIST_ORDER_SQL:
        op.drop_index(LIST_ORDER, table_name="study")
    op.create_index(
        "ix_series_tenant_id_study_instance_uid", "series", ["tenant_id", "study_instance_uid"]
    )
    op.drop_index("ix_series_tenant_id_study_instance_uid_modality", table_name="series")
