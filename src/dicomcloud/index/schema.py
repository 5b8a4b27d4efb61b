"""Index tables (SQLAlchemy Core), one per level of the DICOM information model.

Column names equal the field names of the records in ``dicomcloud.domain.records``;
string lengths follow the VR limits of PS3.5 6.2.  ``tenant_id`` leads every primary key
and every index (PS3.3 has no tenants; we shard by them, DESIGN.md "Tenancy").

Types are chosen to behave the same on SQLite, PostgreSQL and MySQL/MariaDB: tables use
utf8mb4 with a binary collation on MySQL (exact, case-sensitive comparison as on the
other two), UIDs are ASCII with a binary collation there (small keys, exact match).

Keep this module and the newest migration in ``migrations/versions`` in step; the
contract tests compare them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

#: Our own bound on tenant identifiers (not a DICOM VR).
TENANT_ID_LENGTH = 64

# PS3.5 table 6.2-1 maximum lengths, in characters.
UI = 64
LO = 64
SH = 16
CS = 16
AS = 4
DA = 8
TM = 16
PN = 64 * 3 + 2  # three component groups joined by "="
#: folded copy of a PN for fuzzy matching (``dicomcloud.domain.records.FOLDED_PN_LENGTH``)
FOLDED_PN = 2 * PN
#: multi-valued strings (ImageType, WindowCenter...) keep their backslashes
MULTI = 1024
#: an extended query tag value (``dicomcloud.domain.extended_tags.MAX_VALUE_LENGTH``)
EXTENDED_VALUE = 256
#: its folded copy when a PN (``dicomcloud.domain.extended_tags.FOLDED_VALUE_LENGTH``)
FOLDED_EXTENDED_VALUE = 2 * EXTENDED_VALUE
#: BlobStore keys are built from tenant and UIDs
BLOB_KEY = 512

MYSQL_TABLE_ARGS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def uid_type() -> sa.types.TypeEngine[str]:
    """A UID column: ASCII with exact comparison on MySQL."""
    return sa.String(UI).with_variant(
        mysql.VARCHAR(UI, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
    )


def timestamp_type() -> sa.types.TypeEngine[Any]:
    """A UTC timestamp with microseconds on every backend."""
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _tenant() -> sa.Column[str]:
    return sa.Column("tenant_id", sa.String(TENANT_ID_LENGTH), nullable=False)


def _uid(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, uid_type(), nullable=nullable)


def _text(name: str, length: int) -> sa.Column[str]:
    return sa.Column(name, sa.String(length), nullable=True)


def _int(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), nullable=True)


def _float(name: str) -> sa.Column[float]:
    return sa.Column(name, sa.Double(), nullable=True)


def _attributes() -> sa.Column[str]:
    """DICOM JSON of the level's attributes (``dicomcloud.domain.level_json``)."""
    kind = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
    return sa.Column("attributes", kind, nullable=True)


def _stamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", timestamp_type(), nullable=False),
        sa.Column("updated_at", timestamp_type(), nullable=False),
    ]


patient = sa.Table(
    "patient",
    metadata,
    _tenant(),
    sa.Column("patient_id", sa.String(LO), nullable=False),
    _text("issuer_of_patient_id", LO),
    _text("patient_name", PN),
    _text("patient_birth_date", DA),
    _text("patient_birth_time", TM),
    _text("patient_sex", CS),
    _text("patient_name_fuzzy", FOLDED_PN),
    _attributes(),
    *_stamps(),
    sa.PrimaryKeyConstraint("tenant_id", "patient_id"),
    **MYSQL_TABLE_ARGS,
)

study = sa.Table(
    "study",
    metadata,
    _tenant(),
    _uid("study_instance_uid"),
    sa.Column("patient_id", sa.String(LO), nullable=False),
    _text("study_date", DA),
    _text("study_time", TM),
    _text("accession_number", SH),
    _text("study_id", SH),
    _text("study_description", LO),
    _text("referring_physician_name", PN),
    _text("patient_age", AS),
    _float("patient_size"),
    _float("patient_weight"),
    _text("referring_physician_name_fuzzy", FOLDED_PN),
    _attributes(),
    *_stamps(),
    sa.PrimaryKeyConstraint("tenant_id", "study_instance_uid"),
    sa.Index(None, "tenant_id", "patient_id"),
    sa.Index(None, "tenant_id", "study_date"),
    # + ix_study_list_order, an expression index in the study-list order on PostgreSQL
    # and SQLite, created by migration 0003 only (Alembic does not compare expressions)
    sa.Index(None, "tenant_id", "accession_number"),
    **MYSQL_TABLE_ARGS,
)

series = sa.Table(
    "series",
    metadata,
    _tenant(),
    _uid("series_instance_uid"),
    _uid("study_instance_uid"),
    _text("modality", CS),
    _int("series_number"),
    _text("series_date", DA),
    _text("series_time", TM),
    _text("series_description", LO),
    _text("body_part_examined", CS),
    _text("protocol_name", LO),
    _text("performed_procedure_step_start_date", DA),
    _text("performed_procedure_step_start_time", TM),
    _attributes(),
    *_stamps(),
    sa.PrimaryKeyConstraint("tenant_id", "series_instance_uid"),
    # ModalitiesInStudy from the index alone (migration 0003)
    sa.Index(None, "tenant_id", "study_instance_uid", "modality"),
    sa.Index(None, "tenant_id", "modality"),
    **MYSQL_TABLE_ARGS,
)

instance = sa.Table(
    "instance",
    metadata,
    _tenant(),
    _uid("sop_instance_uid"),
    _uid("study_instance_uid"),
    _uid("series_instance_uid"),
    _uid("sop_class_uid"),
    _uid("transfer_syntax_uid"),
    sa.Column("blob_key", sa.String(BLOB_KEY), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    _int("instance_number"),
    _text("content_date", DA),
    _text("content_time", TM),
    _int("number_of_frames"),
    _int("rows"),
    _int("columns"),
    _int("bits_allocated"),
    _int("bits_stored"),
    _int("high_bit"),
    _int("pixel_representation"),
    _int("samples_per_pixel"),
    _text("photometric_interpretation", CS),
    _text("image_type", MULTI),
    _text("image_orientation_patient", MULTI),
    _text("image_position_patient", MULTI),
    _float("slice_thickness"),
    _float("spacing_between_slices"),
    _float("slice_location"),
    _float("rescale_intercept"),
    _float("rescale_slope"),
    _text("rescale_type", LO),
    _text("window_center", MULTI),
    _text("window_width", MULTI),
    _attributes(),
    *_stamps(),
    sa.PrimaryKeyConstraint("tenant_id", "sop_instance_uid"),
    sa.Index(None, "tenant_id", "series_instance_uid"),
    sa.Index(None, "tenant_id", "study_instance_uid"),
    **MYSQL_TABLE_ARGS,
)

#: Values of the extended query tags a tenant configured
#: (``dicomcloud.domain.extended_tags``): one row per value of a tag in the record of
#: its level (``uid`` is that level's UID); integers are also kept as numbers, person
#: names (PN) also folded for fuzzy matching (``value_folded``, NULL for other VRs).
extended_tag_value = sa.Table(
    "extended_tag_value",
    metadata,
    _tenant(),
    sa.Column("level", sa.String(8), nullable=False),
    _uid("uid"),
    sa.Column("tag", sa.String(LO), nullable=False),
    sa.Column("value_string", sa.String(EXTENDED_VALUE), nullable=False),
    sa.Column("value_number", sa.BigInteger(), nullable=True),
    sa.Column("value_folded", sa.String(FOLDED_EXTENDED_VALUE), nullable=True),
    sa.PrimaryKeyConstraint("tenant_id", "level", "uid", "tag", "value_string"),
    sa.Index(None, "tenant_id", "tag", "value_string"),
    sa.Index(None, "tenant_id", "tag", "value_number"),
    **MYSQL_TABLE_ARGS,
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("tenant_id", sa.String(TENANT_ID_LENGTH), nullable=False),
    sa.Column("topic", sa.String(128), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column(
        "payload", sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb"), nullable=False
    ),
    sa.Column("created_at", timestamp_type(), nullable=False),
    # Ids must only grow, also after the newest rows were published and deleted.
    sqlite_autoincrement=True,
    **MYSQL_TABLE_ARGS,
)

#: API keys for machines (``dicomcloud.security.api_keys``): only a digest of the secret.
api_key = sa.Table(
    "api_key",
    metadata,
    sa.Column(
        "key_id",
        sa.String(32).with_variant(
            mysql.VARCHAR(32, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
        ),
        primary_key=True,
    ),
    sa.Column("tenant_id", sa.String(TENANT_ID_LENGTH), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("permissions", sa.String(64), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_at", timestamp_type(), nullable=False),
    sa.Column("revoked_at", timestamp_type(), nullable=True),
    sa.Column("last_used_at", timestamp_type(), nullable=True),
    sa.Index(None, "tenant_id"),
    **MYSQL_TABLE_ARGS,
)

#: The audit trail (``dicomcloud.domain.access.AccessRecord``): one row per DICOMweb
#: request and per DIMSE association or operation; UID lists are backslash-separated
#: (the PS3.5 6.2 multi-value delimiter).  Never holds a credential.
access_log = sa.Table(
    "access_log",
    metadata,
    _tenant(),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("time", timestamp_type(), nullable=False),
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
    sa.PrimaryKeyConstraint("tenant_id", "event_id"),
    sa.Index(None, "tenant_id", "time"),
    sa.Index(None, "time"),
    **MYSQL_TABLE_ARGS,
)

#: Viewer-ready copies (``dicomcloud.domain.derived.DerivedCopy``): an instance kept once
#: more in another transfer syntax, made from the stored version ``source_version``.
derived_copy = sa.Table(
    "derived_copy",
    metadata,
    _tenant(),
    _uid("sop_instance_uid"),
    _uid("transfer_syntax_uid"),
    _uid("study_instance_uid"),
    _uid("series_instance_uid"),
    sa.Column("blob_key", sa.String(BLOB_KEY), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("source_version", sa.String(64), nullable=False),
    sa.Column("created_at", timestamp_type(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "sop_instance_uid", "transfer_syntax_uid"),
    **MYSQL_TABLE_ARGS,
)

#: Conversions to a viewer-ready copy that failed (``TranscodeFailure``), with how
#: often; removed once a copy is kept.
transcode_failure = sa.Table(
    "transcode_failure",
    metadata,
    _tenant(),
    _uid("sop_instance_uid"),
    _uid("transfer_syntax_uid"),
    _uid("study_instance_uid"),
    _uid("series_instance_uid"),
    sa.Column("source_version", sa.String(64), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("reason", sa.String(1024), nullable=False),
    sa.Column("failed_at", timestamp_type(), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "sop_instance_uid", "transfer_syntax_uid"),
    **MYSQL_TABLE_ARGS,
)
