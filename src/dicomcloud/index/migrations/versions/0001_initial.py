"""Initial index: patient, study, series, instance and the outbox.

Self-contained on purpose (no import of ``dicomcloud.index.schema``): a migration must
keep creating the schema of its time when schema.py moves on.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}

TENANT, UI, LO, SH, CS, AS, DA, TM, PN, MULTI, BLOB_KEY = (
    64, 64, 64, 16, 16, 4, 8, 16, 194, 1024, 512,
)  # fmt: skip


def _uid(name: str) -> sa.Column[str]:
    kind = sa.String(UI).with_variant(
        mysql.VARCHAR(UI, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
    )
    return sa.Column(name, kind, nullable=False)


def _stamp(name: str) -> sa.Column[Any]:
    kind = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    return sa.Column(name, kind, nullable=False)


def _str(name: str, length: int) -> sa.Column[str]:
    return sa.Column(name, sa.String(length), nullable=True)


def _int(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), nullable=True)


def _float(name: str) -> sa.Column[float]:
    return sa.Column(name, sa.Double(), nullable=True)


def _tenant() -> sa.Column[str]:
    return sa.Column("tenant_id", sa.String(TENANT), nullable=False)


def upgrade() -> None:
    op.create_table(
        "patient",
        _tenant(),
        sa.Column("patient_id", sa.String(LO), nullable=False),
        _str("issuer_of_patient_id", LO),
        _str("patient_name", PN),
        _str("patient_birth_date", DA),
        _str("patient_birth_time", TM),
        _str("patient_sex", CS),
        _stamp("created_at"),
        _stamp("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "patient_id", name="pk_patient"),
        **MYSQL,
    )
    op.create_table(
        "study",
        _tenant(),
        _uid("study_instance_uid"),
        sa.Column("patient_id", sa.String(LO), nullable=False),
        _str("study_date", DA),
        _str("study_time", TM),
        _str("accession_number", SH),
        _str("study_id", SH),
        _str("study_description", LO),
        _str("referring_physician_name", PN),
        _str("patient_age", AS),
        _float("patient_size"),
        _float("patient_weight"),
        _stamp("created_at"),
        _stamp("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "study_instance_uid", name="pk_study"),
        **MYSQL,
    )
    op.create_index("ix_study_tenant_id_patient_id", "study", ["tenant_id", "patient_id"])
    op.create_index("ix_study_tenant_id_study_date", "study", ["tenant_id", "study_date"])
    op.create_index(
        "ix_study_tenant_id_accession_number", "study", ["tenant_id", "accession_number"]
    )
    op.create_table(
        "series",
        _tenant(),
        _uid("series_instance_uid"),
        _uid("study_instance_uid"),
        _str("modality", CS),
        _int("series_number"),
        _str("series_date", DA),
        _str("series_time", TM),
        _str("series_description", LO),
        _str("body_part_examined", CS),
        _str("protocol_name", LO),
        _str("performed_procedure_step_start_date", DA),
        _str("performed_procedure_step_start_time", TM),
        _stamp("created_at"),
        _stamp("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "series_instance_uid", name="pk_series"),
        **MYSQL,
    )
    op.create_index(
        "ix_series_tenant_id_study_instance_uid", "series", ["tenant_id", "study_instance_uid"]
    )
    op.create_index("ix_series_tenant_id_modality", "series", ["tenant_id", "modality"])
    op.create_table(
        "instance",
        _tenant(),
        _uid("sop_instance_uid"),
        _uid("study_instance_uid"),
        _uid("series_instance_uid"),
        _uid("sop_class_uid"),
        _uid("transfer_syntax_uid"),
        sa.Column("blob_key", sa.String(BLOB_KEY), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        _int("instance_number"),
        _str("content_date", DA),
        _str("content_time", TM),
        _int("number_of_frames"),
        _int("rows"),
        _int("columns"),
        _int("bits_allocated"),
        _int("bits_stored"),
        _int("high_bit"),
        _int("pixel_representation"),
        _int("samples_per_pixel"),
        _str("photometric_interpretation", CS),
        _str("image_type", MULTI),
        _str("image_orientation_patient", MULTI),
        _str("image_position_patient", MULTI),
        _float("slice_thickness"),
        _float("spacing_between_slices"),
        _float("slice_location"),
        _float("rescale_intercept"),
        _float("rescale_slope"),
        _str("rescale_type", LO),
        _str("window_center", MULTI),
        _str("window_width", MULTI),
        _stamp("created_at"),
        _stamp("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "sop_instance_uid", name="pk_instance"),
        **MYSQL,
    )
    op.create_index(
        "ix_instance_tenant_id_series_instance_uid",
        "instance",
        ["tenant_id", "series_instance_uid"],
    )
    op.create_index(
        "ix_instance_tenant_id_study_instance_uid",
        "instance",
        ["tenant_id", "study_instance_uid"],
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        _tenant(),
        sa.Column("topic", sa.String(128), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column(
            "payload",
            sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb"),
            nullable=False,
        ),
        _stamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sqlite_autoincrement=True,
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("instance")
    op.drop_table("series")
    op.drop_table("study")
    op.drop_table("patient")
