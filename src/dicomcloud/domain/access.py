"""The versioned access record: who did what to which resource, with what result.

One record per DICOMweb request and per DIMSE association (plus one per C-ECHO, C-FIND,
C-GET and C-MOVE operation); the seed's ``ApiLogEvent`` and its never-produced
``DicomAccessLog`` (WadoAccessLog), in the spirit of the IHE ATNA audit trail.  Records
never hold credentials: no request header but User-Agent is read, and query parameters
that can carry a secret (``access_token``, ``api_key``...) are redacted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

ACCESS_VERSION: Final = 1
#: The event type and the bus topic of access records.
ACCESS_TOPIC: Final = "access"

DICOMWEB: Final = "DICOMweb"
DIMSE: Final = "DIMSE"
#: An operator's command (``dicomcloud delete``).
CLI: Final = "CLI"

# Actions (what the request or operation was), PS3.18 and PS3.4 names.
STOW_RS: Final = "STOW-RS store"
QIDO_RS: Final = "QIDO-RS search"
WADO_RS_RETRIEVE: Final = "WADO-RS retrieve"
WADO_RS_METADATA: Final = "WADO-RS metadata"
WADO_RS_FRAMES: Final = "WADO-RS frames"
WADO_RS_BULKDATA: Final = "WADO-RS bulkdata"
WADO_RS_RENDERED: Final = "WADO-RS rendered"
WADO_RS_THUMBNAIL: Final = "WADO-RS thumbnail"
WADO_URI: Final = "WADO-URI"
#: DICOMweb DELETE of a study, series or instance (non-standard, services.deletion).
DELETE: Final = "delete"
AUDIT_QUERY: Final = "access-log query"
HTTP_OTHER: Final = "HTTP request"
C_ECHO: Final = "C-ECHO"
C_STORE: Final = "C-STORE"
C_FIND: Final = "C-FIND"
C_GET: Final = "C-GET"
C_MOVE: Final = "C-MOVE"
ASSOCIATION: Final = "association"

#: Whoever could not be identified (no authentication ran, or it named nobody).
ANONYMOUS: Final = "anonymous"

#: UIDs kept per level in one record; a DIMSE association storing more keeps the first
#: ones and counts the rest (``instances``), so a record stays small.
MAX_UIDS: Final = 100

#: Query parameters never stored (lower-cased names; a token in a URL is still a token).
SECRET_PARAMETERS: Final = frozenset(
    {
        "access_token",
        "id_token",
        "refresh_token",
        "token",
        "api_key",
        "apikey",
        "key",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "authorization",
        "code",
        "signature",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
    }
)
REDACTED: Final = "***"

#: Longest stored text per field; longer values are cut (the record is evidence, not a
#: copy of the request).
TEXT_LIMITS: Final = {
    "principal": 256,
    "peer": 64,
    "method": 16,
    "path": 1024,
    "query": 2048,
    "user_agent": 512,
    "called_ae": 16,
    "detail": 1024,
    "node_id": 128,
}


def outcome_of_http(status: int) -> str:
    """``success`` (2xx/3xx except 202), ``warning`` (202: some instances failed,
    PS3.18 10.5.3), ``failure`` (4xx/5xx or none)."""
    if status == 202:
        return "warning"
    return "success" if 200 <= status < 400 else "failure"


def outcome_of_dimse(status: int) -> str:
    """PS3.7 C: 0x0000 success, 0xFF00/0xFF01 pending (counted as success), 0x0001 and
    0xBxxx warnings, 0xFE00 cancel, anything else a failure."""
    if status in (0x0000, 0xFF00, 0xFF01):
        return "success"
    if status == 0x0001 or (status & 0xF000) == 0xB000:
        return "warning"
    if status == 0xFE00:
        return "cancel"
    return "failure"


def redact_query(query: str) -> str:
    """The query string with the values of credential-bearing parameters replaced."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode(
        [(k, REDACTED if k.lower() in SECRET_PARAMETERS else v) for k, v in pairs],
        safe="*,:/",
    )


def bounded(uids: Iterable[str], limit: int = MAX_UIDS) -> tuple[str, ...]:
    """Distinct UIDs in first-seen order, at most ``limit``."""
    seen: dict[str, None] = {}
    for uid in uids:
        if uid and uid not in seen:
            seen[uid] = None
            if len(seen) >= limit:
                break
    return tuple(seen)


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One request or association, as the audit log keeps it."""

    event_id: str  # uuid7: time-ordered
    time: datetime  # UTC, when it started
    node_id: str  # "host:pid" that served it
    protocol: str  # DICOMWEB or DIMSE
    action: str  # one of the action constants
    tenant_id: str
    principal: str  # user/subject, API client, or calling AE title; never a credential
    peer: str | None  # "ip:port" of the client
    status: int  # HTTP status, or DIMSE status (the worst of an association)
    outcome: str  # success / warning / failure / cancel
    duration_ms: float
    bytes_in: int = 0
    bytes_out: int = 0
    method: str | None = None  # HTTP method
    path: str | None = None  # HTTP path, without query
    query: str | None = None  # HTTP query string, secrets redacted
    user_agent: str | None = None  # HTTP User-Agent / DIMSE implementation version name
    called_ae: str | None = None  # DIMSE: the AE title that was called
    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    sop_instance_uids: tuple[str, ...] = ()
    #: instances transferred (stored, retrieved, matched), also beyond ``MAX_UIDS``
    instances: int = 0
    #: DIMSE operations of an association (1 for a DICOMweb request)
    operations: int = 1
    detail: str | None = None  # e.g. an association's operations and statuses
    type: str = ACCESS_TOPIC
    version: int = ACCESS_VERSION

    @property
    def key(self) -> str:
        """Partition key on the bus: a tenant's records stay in order."""
        return self.tenant_id

    def clipped(self) -> AccessRecord:
        """This record with every text within its stored length (``TEXT_LIMITS``)."""
        changes: dict[str, Any] = {}
        for name, limit in TEXT_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, str) and len(value) > limit:
                changes[name] = value[:limit]
        return replace(self, **changes) if changes else self

    def to_json(self) -> str:
        # Field by field: dataclasses.asdict deep-copies every value (~10x slower).
        data = {name: getattr(self, name) for name in _FIELDS}
        data["time"] = self.time.isoformat(timespec="microseconds")
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the admin API's and the bus's form)."""
        data: dict[str, Any] = json.loads(self.to_json())
        return data

    @classmethod
    def from_json(cls, text: str) -> AccessRecord:
        data: dict[str, Any] = json.loads(text)
        data["time"] = datetime.fromisoformat(data["time"])
        for name in ("study_uids", "series_uids", "sop_instance_uids"):
            data[name] = tuple(data[name])
        return cls(**data)


_FIELDS: Final = tuple(f.name for f in fields(AccessRecord))


@dataclass(frozen=True, slots=True)
class AccessQuery:
    """What an administrator asks of the access log; every given field must match."""

    tenant_id: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    action: str | None = None
    principal: str | None = None
    protocol: str | None = None
    study_uid: str | None = None
    limit: int = 100
    offset: int = 0
    #: newest first (the default) or oldest first
    newest_first: bool = True


def matches(record: AccessRecord, query: AccessQuery) -> bool:
    """Whether ``record`` satisfies ``query`` (the reference semantics of every store)."""
    return (
        (query.tenant_id is None or record.tenant_id == query.tenant_id)
        and (query.since is None or record.time >= query.since)
        and (query.until is None or record.time < query.until)
        and (query.action is None or record.action == query.action)
        and (query.principal is None or record.principal == query.principal)
        and (query.protocol is None or record.protocol == query.protocol)
        and (query.study_uid is None or query.study_uid in record.study_uids)
    )
