"""Storage keys, built only from validated values.

Layout (DESIGN.md): ``{tenant}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm``.
UIDs are ``[0-9.]`` only (PS3.5 9.1) and tenant ids ``[A-Za-z0-9_-]``, so a key can
never hold a path separator or a ``..`` component; ``check_key`` enforces it again at
the store, so that no caller can build a key that escapes the data directory.
"""

from __future__ import annotations

import re

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def instance_key(
    tenant_id: str, study_uid: str, series_uid: str, sop_uid: str, version: str = ""
) -> str:
    """The key of one stored instance; ``version`` distinguishes a replacement."""
    if not _TENANT.match(tenant_id):
        raise ValueError(f"invalid tenant id {tenant_id!r}")
    for uid in (study_uid, series_uid, sop_uid):
        if len(uid) > 64 or not _UID.match(uid):
            raise ValueError(f"invalid UID {uid!r}")
    if version and not re.fullmatch(r"[0-9a-f]{1,32}", version):
        raise ValueError(f"invalid version {version!r}")
    name = f"{sop_uid}.{version}.dcm" if version else f"{sop_uid}.dcm"
    return f"{tenant_id}/{study_uid}/{series_uid}/{name}"


def _series_prefix(tenant_id: str, study_uid: str, series_uid: str) -> str:
    if not _TENANT.match(tenant_id):
        raise ValueError(f"invalid tenant id {tenant_id!r}")
    for uid in (study_uid, series_uid):
        if len(uid) > 64 or not _UID.match(uid):
            raise ValueError(f"invalid UID {uid!r}")
    return f"{tenant_id}/{study_uid}/{series_uid}"


def _check_version(version: str) -> None:
    if not re.fullmatch(r"[0-9a-f]{8,64}", version):
        raise ValueError(f"invalid version {version!r}")


def instance_metadata_key(
    tenant_id: str, study_uid: str, series_uid: str, sop_uid: str, version: str
) -> str:
    """The key of one instance's precomputed metadata (in the metadata store):
    ``{tenant}/{study}/{series}/{sop}.{version}.json``, ``version`` a hex fingerprint
    of the stored object it was built from (a replacement gets a new key)."""
    if len(sop_uid) > 64 or not _UID.match(sop_uid):
        raise ValueError(f"invalid UID {sop_uid!r}")
    _check_version(version)
    return f"{_series_prefix(tenant_id, study_uid, series_uid)}/{sop_uid}.{version}.json"


def series_metadata_key(tenant_id: str, study_uid: str, series_uid: str, version: str) -> str:
    """The key of a series' precomputed metadata (a gzip'd DICOM JSON array):
    ``{tenant}/{study}/{series}/series.{version}.json.gz``, ``version`` the ETag, a hex
    fingerprint of the instances it holds."""
    _check_version(version)
    return f"{_series_prefix(tenant_id, study_uid, series_uid)}/series.{version}.json.gz"


def check_key(key: str) -> list[str]:
    """Split a key into path segments, refusing anything that could leave the root."""
    segments = key.split("/")
    if not segments or any(not _SEGMENT.match(s) or s in {".", ".."} for s in segments):
        raise ValueError(f"invalid storage key {key!r}")
    return segments


def derived_key(
    tenant_id: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    transfer_syntax_uid: str,
    version: str,
) -> str:
    """The key of a viewer-ready copy of an instance (in the instance store):
    ``{tenant}/{study}/{series}/{sop}.derived/{transfer syntax}.{version}.dcm``,
    ``version`` a hex fingerprint of the stored original it was made from.  The
    ``.derived`` folder never matches an instance key (``{sop}[.{version}].dcm``)."""
    for uid in (sop_uid, transfer_syntax_uid):
        if len(uid) > 64 or not _UID.match(uid):
            raise ValueError(f"invalid UID {uid!r}")
    _check_version(version)
    prefix = _series_prefix(tenant_id, study_uid, series_uid)
    return f"{prefix}/{sop_uid}.derived/{transfer_syntax_uid}.{version}.dcm"
