"""Typed settings: TOML file, ``DICOMCLOUD_*`` environment variables and ``.env``.

Precedence, highest first: command-line options, environment variables, ``.env``, the
TOML file given with ``--config``, built-in defaults.  Nested keys use ``__`` in the
environment (``DICOMCLOUD_SERVER__HTTP_PORT=8042``).  Settings are validated once at
start-up and are immutable afterwards; a bad value is an error naming its key.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from dicomcloud.domain.extended_tags import SUPPORTED_VRS, ExtendedTag
from dicomcloud.domain.query import resolve_path
from dicomcloud.domain.records import DuplicatePolicy
from dicomcloud.errors import ConfigurationError

if TYPE_CHECKING:
    from dicomcloud.storage.encrypted import KeyRing

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 6.2 AE: no backslash
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
TENANT_PATTERN = _TENANT
_UID_VALUE = re.compile(r"^[0-9]+(\.[0-9]+)*$")  # PS3.5 9.1


def split_address(address: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6-address]:port`` too) as a pair, or None if malformed."""
    host, sep, port = address.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isascii() or not port.isdigit():
        return None
    number = int(port)
    return (host, number) if 0 < number < 65536 else None


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsSettings(_Section):
    """TLS of one listener (``[server.tls]``: HTTPS; ``[dimse.tls]``: DICOM TLS,
    PS3.15 B.1), on when ``cert_file`` is set (``dicomcloud.tls``).

    ``ca_file`` verifies client certificates (asked for, and required with
    ``require_client_cert``: mutual TLS) and, for ``[dimse.tls]``, the C-MOVE
    destinations listed in ``dimse.tls_destinations``, to which ``cert_file`` is
    presented as our client certificate.
    """

    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    require_client_cert: bool = False
    #: Outgoing connections: the peer's certificate must name the host connected to.
    check_hostname: bool = True

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    @model_validator(mode="after")
    def _consistent(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be set together")
        if self.require_client_cert and self.ca_file is None:
            raise ValueError("require_client_cert needs ca_file (the CA of client certificates)")
        for name in ("cert_file", "key_file", "ca_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {path} is not a readable file")
        return self


#: What a node of the archive does (``server.roles``).
Role = Literal["web", "dimse", "worker"]


class ServerSettings(_Section):
    """Where the archive listens."""

    host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    dicom_port: int = Field(default=11112, ge=0, le=65535)
    ae_title: str = "DICOMCLOUD"
    #: Processes sharing the ports (SO_REUSEPORT); 0 means one per core, at most 4.
    workers: int = Field(default=1, ge=0, le=64)
    #: Public base URL used in RetrieveURL values; derived from host/port when empty.
    base_url: str = ""
    #: HTTPS for DICOMweb.
    tls: TlsSettings = TlsSettings()
    #: What this node does: ``web`` (DICOMweb, the study browser and the viewer),
    #: ``dimse`` (the DICOM port) and ``worker`` (event consumers: the metadata builder
    #: and user consumers).  The health probes answer on the HTTP port in every role.
    roles: tuple[Role, ...] = ("web", "dimse", "worker")

    @field_validator("roles", mode="before")
    @classmethod
    def _split_roles(cls, value: Any) -> Any:
        """``"web,dimse"`` (the command line, the environment) as a list."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("roles")
    @classmethod
    def _some_roles(cls, value: tuple[Role, ...]) -> tuple[Role, ...]:
        if not value:
            raise ValueError("give at least one of web, dimse, worker")
        return tuple(dict.fromkeys(value))

    @field_validator("ae_title")
    @classmethod
    def _valid_ae_title(cls, value: str) -> str:
        if not _AE_TITLE.match(value) or not value.strip():
            raise ValueError("must be 1-16 printable ASCII characters without backslash")
        return value.strip()


class IndexSettings(_Section):
    """The relational index (``sqlite:///``, ``postgresql://``, ``mysql://``)."""

    url: str = ""  # empty: sqlite:///{data_dir}/index.sqlite3
    #: Connections kept open to PostgreSQL / MySQL per process (as many again in bursts).
    pool_size: int = Field(default=10, ge=1, le=200)


class EncryptionSettings(_Section):
    """Encryption at rest (``[storage.encryption]``): AES-256-GCM per object
    (``dicomcloud.storage.encrypted``), on when ``active_key_id`` is set.

    ``keys`` maps key ids to base64-encoded 32-byte keys; ``key_file`` names a TOML file
    of more ``id = "base64"`` lines (kept out of the main configuration).  New objects
    are sealed with ``active_key_id``; older keys stay to read older objects until
    ``dicomcloud storage rotate-keys`` has re-encrypted them.
    """

    active_key_id: str = ""
    keys: dict[str, SecretStr] = Field(default_factory=dict)
    key_file: Path | None = None
    #: Read objects written before encryption was enabled, as they are.
    allow_plaintext: bool = False
    #: Plaintext bytes per sealed segment (a range read decrypts whole segments).
    segment_bytes: int = Field(default=64 * 1024, ge=4096, le=16 << 20)

    @property
    def enabled(self) -> bool:
        return bool(self.active_key_id)

    @model_validator(mode="after")
    def _valid_keys(self) -> EncryptionSettings:
        if self.enabled:
            self.keyring()
        return self

    def key_material(self) -> dict[str, bytes]:
        """Every configured key, decoded (``ConfigurationError`` naming the bad one,
        never showing it)."""
        encoded: dict[str, str] = {k: v.get_secret_value() for k, v in self.keys.items()}
        if self.key_file is not None:
            try:
                with self.key_file.open("rb") as handle:
                    from_file = tomllib.load(handle)
            except OSError as exc:
                raise ConfigurationError(
                    f"storage.encryption.key_file {self.key_file}: {exc.strerror or exc}"
                ) from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigurationError(
                    f"storage.encryption.key_file {self.key_file} is not TOML: {exc}"
                ) from exc
            for key_id, value in from_file.items():
                if not isinstance(value, str):
                    raise ConfigurationError(
                        f"storage.encryption.key_file: {key_id!r} must be a base64 string"
                    )
                encoded[key_id] = value
        decoded: dict[str, bytes] = {}
        for key_id, value in encoded.items():
            try:
                decoded[key_id] = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConfigurationError(
                    f"storage.encryption key {key_id!r} is not valid base64"
                ) from exc
        return decoded

    def keyring(self) -> KeyRing:
        from dicomcloud.storage.encrypted import KeyRing

        return KeyRing(self.key_material(), self.active_key_id)


class StorageSettings(_Section):
    """Blob storage of the Part-10 files (``file:///path`` or
    ``s3://bucket/prefix?endpoint_url=...&region=...``)."""

    url: str = ""  # empty: file://{data_dir}/blobs
    fsync: bool = True  # never turn off in production: acknowledged means durable
    #: S3 credentials; empty: the usual AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
    #: AWS_SESSION_TOKEN variables (or the instance's role).  Redacted by check-config.
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_session_token: str = ""
    #: Region and endpoint when the URL does not give them (``AWS_REGION``,
    #: ``AWS_ENDPOINT_URL`` otherwise).
    s3_region: str = ""
    s3_endpoint_url: str = ""
    #: Objects larger than this go up as multipart uploads of ``s3_part_size`` parts.
    s3_multipart_threshold: int = Field(default=16 << 20, ge=0)
    s3_part_size: int = Field(default=8 << 20, ge=5 << 20, le=5 << 30)
    s3_max_concurrency: int = Field(default=4, ge=1, le=64)
    #: Retries of a failed request (exponential backoff), and the time they may take.
    s3_max_retries: int = Field(default=5, ge=0, le=100)
    s3_retry_timeout: float = Field(default=60.0, gt=0)
    #: False for S3 servers without conditional writes (If-None-Match: *).
    s3_conditional_put: bool = True

    encryption: EncryptionSettings = EncryptionSettings()


class EventSettings(_Section):
    """The event bus fed by the outbox relay (docs/events.md): ``memory://``,
    ``redis://host:6379/0?stream_prefix=dicomcloud:`` or
    ``kafka://host:9092?topic_prefix=dicomcloud.``."""

    url: str = "memory://"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = value.partition("://")[0]
        if scheme not in ("memory", "redis", "rediss", "kafka"):
            raise ValueError("must start with memory://, redis://, rediss:// or kafka://")
        return value


#: ``[workers.transcoder] sources`` value meaning every transfer syntax.
ALL_SYNTAXES = "*"


class TranscoderSettings(_Section):
    """The viewer-ready transcoder (consumer group ``transcoder``, docs/events.md):
    keeps, next to each stored instance whose transfer syntax is one of ``sources``,
    a copy in ``target`` that WADO-RS serves without transcoding on request.  The
    original is never changed; only lossless targets are allowed, so that the copy
    decodes to exactly the original's pixels."""

    enabled: bool = False
    #: Transfer syntax UIDs to keep a copy of (``"*"``: every one but ``target``).
    #: The default: the compressed syntaxes browsers' viewers most often cannot decode.
    sources: tuple[str, ...] = (
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.5",  # RLE Lossless
    )
    #: The copy's transfer syntax: Explicit VR Little Endian (the DICOMweb default,
    #: PS3.18 8.7.3.4) or a lossless compressed one such as HTJ2K Lossless
    #: ``1.2.840.10008.1.2.4.201``.
    target: str = "1.2.840.10008.1.2.1"
    #: Instances transcoded at once by one worker process (CPU bound).
    concurrency: int = Field(default=2, ge=1, le=64)
    #: Decode the copy and compare its pixels with the original's before keeping it.
    verify: bool = True

    @field_validator("sources")
    @classmethod
    def _valid_sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for uid in value:
            if uid != ALL_SYNTAXES and not _UID_VALUE.match(uid):
                raise ValueError(f"{uid!r} is not a transfer syntax UID (or '*')")
        return value

    @field_validator("target")
    @classmethod
    def _lossless_target(cls, value: str) -> str:
        from dicomcloud.services import syntaxes
        from dicomcloud.services.transcode import TARGETS

        if value not in TARGETS:
            raise ValueError(f"{value!r} is not a transfer syntax this archive can encode")
        if syntaxes.is_lossy(value):
            raise ValueError(f"{value} is lossy: the viewer-ready copy must be lossless")
        return value


class WorkerSettings(_Section):
    """Event consumers: the series metadata builder and your own (docs/events.md)."""

    #: ``dicomcloud serve`` runs the workers too (in its first process); turn off when
    #: separate ``dicomcloud worker`` processes consume a redis:// or kafka:// bus.
    in_process: bool = True
    #: Run the series metadata builder (consumer group ``metadata``).
    metadata: bool = True
    #: Your consumers, ``package.module:attribute`` (a Consumer or an async function).
    consumers: tuple[str, ...] = ()
    #: Attempts of a failing handler before the message goes to ``<topic>.dlq``.
    max_attempts: int = Field(default=5, ge=1, le=100)
    #: Wait after the first failed attempt; doubled after each further one (max 30 s).
    retry_backoff_seconds: float = Field(default=0.5, ge=0)
    #: The viewer-ready transcoder (``[workers.transcoder]``).
    transcoder: TranscoderSettings = TranscoderSettings()

    @field_validator("consumers")
    @classmethod
    def _valid_specs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for spec in value:
            module, sep, attribute = spec.partition(":")
            if not sep or not module or not attribute:
                raise ValueError(f"{spec!r} is not package.module:attribute")
        return value


class CacheSettings(_Section):
    """The cache of series metadata, hot QIDO-RS results and JWKS documents
    (``memory://`` in this process, or ``redis://host:port/db`` shared by workers and
    nodes).  A cache outage slows requests down, it never fails them."""

    url: str = "memory://"
    #: Prefix of every Redis key (several archives may share one Redis).
    key_prefix: str = "dicomcloud:"
    #: Bounds of the memory cache: entries and bytes of values (LRU beyond them).
    max_entries: int = Field(default=10_000, ge=1)
    max_bytes: int = Field(default=128 << 20, ge=1 << 20)
    #: How long a QIDO-RS response and a series' metadata stay cached; 0 disables.
    qido_ttl_seconds: float = Field(default=60.0, ge=0)
    metadata_ttl_seconds: float = Field(default=600.0, ge=0)
    #: Redis socket timeout, and how long a failed cache is bypassed before a retry.
    timeout_seconds: float = Field(default=0.5, gt=0)
    retry_after_seconds: float = Field(default=5.0, ge=0)


class IngestSettings(_Section):
    """Ingest policy and limits."""

    duplicate_policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST
    #: Most instances committed in one index transaction (group commit).
    max_batch: int = Field(default=200, ge=1, le=5000)
    #: Largest accepted STOW-RS request body and DICOM object, in bytes.
    max_request_bytes: int = Field(default=8 << 30, ge=1024)
    max_instance_bytes: int = Field(default=4 << 30, ge=1024)
    #: Parts up to this size are kept in memory while a request streams in.
    spool_memory_bytes: int = Field(default=8 << 20, ge=0)
    #: Instances of one STOW-RS request processed concurrently.
    request_concurrency: int = Field(default=16, ge=1, le=256)
    #: Most body parts (instances) read from one STOW-RS request.
    max_parts: int = Field(default=10_000, ge=1)


class MetadataSettings(_Section):
    """WADO-RS metadata (PS3.18 10.4.1.1.6, Annex F) and rendered resources."""

    #: Where precomputed metadata is kept (``file:///path``); empty: file://{data_dir}/metadata.
    url: str = ""
    #: Binary values (OB, OW, UN...) longer than this many bytes become a BulkDataURI
    #: (PS3.18 F.2.6); shorter ones stay inline (InlineBinary), as viewers expect.
    bulk_data_threshold: int = Field(default=1024, ge=0)
    #: Seconds without a new instance before a series' metadata is rebuilt.
    quiet_seconds: float = Field(default=1.0, ge=0)
    #: Threads rendering images (PS3.18 10.4.1.1.x rendered and thumbnail resources).
    render_threads: int = Field(default=2, ge=1, le=64)


def _check_destinations(value: dict[str, str]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for ae_title, address in value.items():
        if not _AE_TITLE.match(ae_title) or not ae_title.strip():
            raise ValueError(f"{ae_title!r} is not an AE title (1-16 characters, no backslash)")
        if split_address(address) is None:
            raise ValueError(f"{ae_title}: {address!r} is not host:port")
        checked[ae_title.strip()] = address.strip()
    return checked


def _check_ae_title(value: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise ValueError(f"{value!r} is not an AE title (1-16 characters, no backslash)")
    return value.strip()


def _check_tenant(value: str) -> str:
    if not _TENANT.match(value):
        raise ValueError(
            f"{value!r} is not a tenant id (1-64 characters of A-Z a-z 0-9 _ -, not leading _ -)"
        )
    return value


def find_address(table: dict[str, str], ae_title: str) -> tuple[str, int] | None:
    """The address of AE title ``ae_title`` in ``table``, or None if unknown.  AE
    titles compare exactly, then ignoring case (environment variable names are
    case-insensitive)."""
    address = table.get(ae_title)
    if address is None:
        folded = [v for k, v in table.items() if k.upper() == ae_title.upper()]
        address = folded[0] if len(folded) == 1 else None
    return split_address(address) if address is not None else None


class DimseTenantSettings(_Section):
    """One ``[[dimse.tenants]]`` entry: associations called ``called_ae_title`` (and,
    when given, from one of ``calling_ae_titles`` and from an address in ``peers``) act
    on ``tenant``'s data only.

    ``calling_ae_titles`` is the tenant's allow-list of calling AE titles (empty: any);
    ``peers`` are IP addresses or networks (``10.1.0.0/16``; empty: any).
    ``destinations`` are this tenant's C-MOVE destinations (AE title -> ``host:port``);
    when empty, the global ``[dimse.destinations]`` table is used.
    """

    called_ae_title: str
    tenant: str
    calling_ae_titles: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()
    destinations: dict[str, str] = Field(default_factory=dict)

    @field_validator("called_ae_title")
    @classmethod
    def _valid_called(cls, value: str) -> str:
        return _check_ae_title(value)

    @field_validator("tenant")
    @classmethod
    def _valid_tenant(cls, value: str) -> str:
        return _check_tenant(value)

    @field_validator("calling_ae_titles")
    @classmethod
    def _valid_calling(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_ae_title(title) for title in value)

    @field_validator("peers")
    @classmethod
    def _valid_peers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for peer in value:
            try:
                ipaddress.ip_network(peer.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{peer!r} is not an IP address or network") from None
        return tuple(peer.strip() for peer in value)

    @field_validator("destinations")
    @classmethod
    def _valid_destinations(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_destinations(value)

    def admits_calling(self, calling_ae_title: str) -> bool:
        """Whether the allow-list admits ``calling_ae_title`` (exact match, PS3.5 6.2:
        trailing spaces are not significant)."""
        return not self.calling_ae_titles or calling_ae_title.strip() in self.calling_ae_titles

    def admits_peer(self, address: str) -> bool:
        """Whether ``address`` (the peer's IP address) is in one of ``peers``."""
        if not self.peers:
            return True
        try:
            ip = ipaddress.ip_address(address.strip().removeprefix("[").removesuffix("]"))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in ipaddress.ip_network(peer, strict=False) for peer in self.peers)


class DimseSettings(_Section):
    """DICOM upper layer options (PS3.8)."""

    max_pdu_length: int = Field(default=0, ge=0)  # 0: unlimited
    network_timeout: float = Field(default=60.0, gt=0)
    acse_timeout: float = Field(default=30.0, gt=0)
    dimse_timeout: float = Field(default=60.0, gt=0)
    max_associations: int = Field(default=64, ge=1, le=1000)
    #: C-MOVE destinations (PS3.4 C.4.2.1.3): Move Destination AE title -> "host:port".
    #: TOML table ``[dimse.destinations]`` (``STORESCP = "10.0.0.5:104"``) or
    #: ``DICOMCLOUD_DIMSE__DESTINATIONS='{"STORESCP": "10.0.0.5:104"}'``.
    destinations: dict[str, str] = Field(default_factory=dict)
    #: Tenants by called AE title (``[[dimse.tenants]]``, see
    #: :mod:`dicomcloud.dimse.tenancy`); empty: every association acts on the default
    #: tenant, whatever AE title it calls.
    tenants: tuple[DimseTenantSettings, ...] = ()

    #: DICOM TLS (PS3.15 B.1) of the SCP, and of associations to ``tls_destinations``.
    tls: TlsSettings = TlsSettings()
    #: Move Destinations reached over DICOM TLS (AE titles of ``destinations``).
    tls_destinations: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _known_tls_destinations(self) -> DimseSettings:
        for ae_title in self.tls_destinations:
            if ae_title.strip() not in self.destinations:
                raise ValueError(f"tls_destinations: {ae_title!r} is not in destinations")
        return self

    def destination_uses_tls(self, ae_title: str) -> bool:
        """Whether associations to the Move Destination ``ae_title`` use DICOM TLS."""
        wanted = {t.strip().upper() for t in self.tls_destinations}
        return ae_title.strip().upper() in wanted

    @field_validator("destinations")
    @classmethod
    def _valid_destinations(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_destinations(value)

    def destination(self, ae_title: str) -> tuple[str, int] | None:
        """The address of the Move Destination ``ae_title`` in ``[dimse.destinations]``,
        or None if unknown."""
        return find_address(self.destinations, ae_title)


class ExtendedQueryTagSettings(_Section):
    """One extended query tag (``[[search.extended_query_tags]]``): an attribute indexed
    and searchable at ``level`` and below (``dicomcloud.domain.extended_tags``).

    ``tag`` is a keyword or eight hexadecimal digits; a private tag (odd group, PS3.5
    7.8.1) needs its ``vr`` and should name its ``private_creator``, whose block the
    element's ``xx`` stands for.  A dotted path of public attributes
    (``RequestAttributesSequence.RequestedProcedureID``) names a tag inside sequences
    (sequence matching, PS3.4 C.2.2.2.6).  ``tenants`` limits it to some tenants
    (default all).
    """

    tag: str
    level: Literal["study", "series", "instance"]
    vr: str | None = None
    private_creator: str | None = None
    tenants: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _valid_tag(self) -> ExtendedQueryTagSettings:
        self.resolved()
        return self

    def resolved(self) -> ExtendedTag:
        """The tag as the index and the query parser use it; ValueError naming the
        problem."""
        if "." in self.tag:
            return self._resolved_path()
        if re.fullmatch(r"[0-9A-Fa-f]{8}", self.tag):
            number = int(self.tag, 16)
        else:
            found = tag_for_keyword(self.tag)
            if found is None:
                raise ValueError(f"tag {self.tag!r} is neither a keyword nor 8 hex digits")
            number = found
        group, element = number >> 16, number & 0xFFFF
        if group & 1:  # private (PS3.5 7.8.1)
            if element < 0x1000:
                raise ValueError(
                    f"tag {self.tag!r}: a private data element is (gggg,10ee)-(gggg,FFee)"
                )
            if self.vr is None:
                raise ValueError(f"tag {self.tag!r}: vr is required for a private tag")
            key, vr = f"{number:08X}", self.vr
        else:
            if self.private_creator is not None:
                raise ValueError(f"tag {self.tag!r}: private_creator is only for private tags")
            keyword = keyword_for_tag(number)
            if not keyword:
                raise ValueError(f"tag {self.tag!r} is not in the DICOM data dictionary")
            key, vr = keyword, dictionary_VR(number)
            if self.vr is not None and self.vr != vr:
                raise ValueError(f"tag {self.tag!r}: vr {self.vr!r} is not its VR {vr!r}")
        return self._tag(key, number, vr, ())

    def _tag(self, key: str, number: int, vr: str, path: tuple[int, ...]) -> ExtendedTag:
        if len(key) > 64:
            raise ValueError(f"tag {self.tag!r}: the path is longer than 64 characters")
        if vr not in SUPPORTED_VRS:
            raise ValueError(f"tag {self.tag!r}: vr {vr!r} is not one of {sorted(SUPPORTED_VRS)}")
        if self.tenants is not None:
            for tenant in self.tenants:
                if not _TENANT.match(tenant):
                    raise ValueError(f"tenants: {tenant!r} is not a tenant identifier")
        return ExtendedTag(
            key=key,
            tag=number,
            level=self.level,
            vr=vr,
            private_creator=self.private_creator,
            tenants=None if self.tenants is None else frozenset(self.tenants),
            path=path,
        )

    def _resolved_path(self) -> ExtendedTag:
        """``Sequence.Attribute`` (any depth): every part public, all but the last SQ."""
        if self.private_creator is not None or self.vr is not None:
            raise ValueError(f"tag {self.tag!r}: a sequence path names public attributes only")
        keywords = resolve_path(self.tag)
        if keywords is None:
            raise ValueError(
                f"tag {self.tag!r} is not a path of DICOM attributes (keywords or 8 hex "
                "digits, separated by dots)"
            )
        numbers = [tag_for_keyword(k) or 0 for k in keywords]
        for keyword, number in zip(keywords[:-1], numbers, strict=False):
            if dictionary_VR(number) != "SQ":
                raise ValueError(f"tag {self.tag!r}: {keyword} is not a sequence")
        return self._tag(
            ".".join(keywords), numbers[-1], dictionary_VR(numbers[-1]), tuple(numbers[:-1])
        )


class SearchSettings(_Section):
    """QIDO-RS and C-FIND (PS3.18 10.6, PS3.4 C.4.1)."""

    #: Most results of one QIDO-RS response; beyond it the response says so in a
    #: Warning header and the client pages on with offset (PS3.18 8.3.4.4).
    max_limit: int = Field(default=10_000, ge=1, le=1_000_000)
    #: Longest query string (bytes after "?") of any request; longer: 414.
    max_query_length: int = Field(default=8192, ge=256, le=1 << 20)
    #: Further attributes indexed and searchable, per tenant (extended query tags).
    extended_query_tags: tuple[ExtendedQueryTagSettings, ...] = ()

    @field_validator("extended_query_tags")
    @classmethod
    def _distinct_tags(
        cls, value: tuple[ExtendedQueryTagSettings, ...]
    ) -> tuple[ExtendedQueryTagSettings, ...]:
        keys = [item.resolved().key for item in value]
        for key in keys:
            if keys.count(key) > 1:
                raise ValueError(f"tag {key} is configured more than once")
        return value

    def extended_tags(self) -> tuple[ExtendedTag, ...]:
        """The configured extended query tags of every tenant."""
        return tuple(item.resolved() for item in self.extended_query_tags)

    def extended_tags_of(self, tenant_id: str) -> tuple[ExtendedTag, ...]:
        """The extended query tags ``tenant_id`` has configured."""
        return tuple(tag for tag in self.extended_tags() if tag.applies_to(tenant_id))


class TenancySettings(_Section):
    """Which tenants DICOMweb serves under ``/tenants/{tenant}/dicom-web``."""

    #: Allow-list of tenant ids; a request for another tenant answers 404.  Empty: any
    #: valid tenant id is served (an unknown one simply has no data).
    tenants: tuple[str, ...] = ()

    @field_validator("tenants")
    @classmethod
    def _valid_tenants(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_tenant(tenant) for tenant in value)

    def allows(self, tenant_id: str) -> bool:
        """Whether DICOMweb serves ``tenant_id`` (a valid tenant id)."""
        return not self.tenants or tenant_id in self.tenants


#: Permissions a claim rule or an API key can grant (see ``dicomcloud.security``).
PermissionName = Literal["read", "write", "delete", "admin"]
#: Signature algorithms a token may use: asymmetric only (RFC 7518 3.1).  ``none`` and
#: the HMAC family (HS256...) are never accepted: an HMAC "secret" would be the
#: provider's public key, which anyone can fetch (the key-confusion attack).
ASYMMETRIC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
AuthMode = Literal["none", "oidc", "apikey", "oidc+apikey"]


class ClaimRule(_Section):
    """One ``[[auth.rules]]`` entry: when the JSONPath ``claim`` of a token's claims
    yields one of ``values``, the token gets ``permissions`` (on its tenants, limited to
    ``tenants`` when given).  List values are searched item by item; with ``split`` a
    string value is split on whitespace first (the OAuth 2.0 ``scope`` claim, RFC 8693
    4.2)."""

    claim: str
    values: tuple[str, ...] = Field(min_length=1)
    permissions: tuple[PermissionName, ...] = Field(min_length=1)
    split: bool = False
    tenants: tuple[str, ...] | None = None

    @field_validator("claim")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
        from jsonpath_ng.ext.parser import parse

        try:
            parse(value)
        except (JsonPathLexerError, JsonPathParserError, ValueError) as exc:
            raise ValueError(f"{value!r} is not a JSONPath expression: {exc}") from exc
        return value


#: Used when no ``[[auth.rules]]`` are configured: the ``scope`` claim's words.
DEFAULT_CLAIM_RULES = tuple(
    ClaimRule(claim="$.scope", values=(f"dicom:{name}",), permissions=(name,), split=True)
    for name in ("read", "write", "delete", "admin")
)


class AuthSettings(_Section):
    """Authentication and authorisation of DICOMweb (README "Security").

    ``mode`` unset: no authentication, and ``dicomcloud serve`` refuses to listen on
    anything but a loopback address.  ``"none"`` turns authentication off explicitly
    (behind a trusted proxy that authenticates); ``"oidc"`` accepts OAuth 2.0 bearer
    tokens (RFC 6750) from ``issuer``; ``"apikey"`` accepts API keys; ``"oidc+apikey"``
    both.
    """

    mode: AuthMode | None = None
    #: The token issuer (``iss``, RFC 7519 4.1.1); also where discovery is looked up.
    issuer: str = ""
    #: This archive's identifier in the ``aud`` claim (RFC 7519 4.1.3).
    audience: str = ""
    #: The provider's JWK Set; empty: ``jwks_uri`` of ``{issuer}/.well-known/openid-configuration``.
    jwks_url: str = ""
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    #: Clock skew allowed on ``exp`` and ``nbf``, in seconds.
    leeway_seconds: float = Field(default=30.0, ge=0, le=600)
    #: How long a fetched JWK Set is used before it is fetched again.
    jwks_cache_seconds: float = Field(default=600.0, ge=1)
    #: A token with an unknown ``kid`` refetches the set at most this often (key rotation).
    jwks_min_refresh_seconds: float = Field(default=10.0, ge=0)
    #: JSONPath of the claim naming the tenant(s) a token acts for; tokens without it
    #: act for ``default_tenant`` unless ``require_tenant_claim``.
    tenant_claim: str = "$.tenant"
    require_tenant_claim: bool = False
    #: Claims -> permissions; empty: the ``scope`` words ``dicom:read``, ``dicom:write``,
    #: ``dicom:delete`` and ``dicom:admin``.
    rules: tuple[ClaimRule, ...] = ()
    #: The ``realm`` of ``WWW-Authenticate`` challenges (RFC 7235 2.2).
    realm: str = "dicomcloud"
    #: The study browser's and the viewer's OAuth 2.0 client at ``issuer``: a public
    #: client (no secret) using the authorization code flow with PKCE (RFC 7636, S256),
    #: registered with the redirect URIs ``{base}/ui/`` and ``{base}/viewer/callback``.
    #: Empty: the pages do not log in (their DICOMweb calls are refused).
    browser_client_id: str = ""
    #: Scopes the pages ask for (RFC 6749 3.3); ``openid`` makes it an OIDC login.
    browser_scopes: tuple[str, ...] = ("openid", "dicom:read", "dicom:write")
    #: Extra parameters of the authorization request: ``audience`` for Auth0,
    #: ``resource`` (RFC 8707) for providers that issue tokens per resource server.
    browser_authorize_params: dict[str, str] = Field(default_factory=dict)
    #: The provider's endpoints; empty: from its discovery document (OIDC Discovery 3).
    authorization_endpoint: str = ""
    token_endpoint: str = ""
    end_session_endpoint: str = ""

    @field_validator("mode", mode="before")
    @classmethod
    def _canonical_mode(cls, value: Any) -> Any:
        """``["oidc", "apikey"]``, ``"apikey+oidc"`` and ``"oidc,apikey"`` all mean
        ``"oidc+apikey"``."""
        if value is None:
            return None
        parts = re.split(r"[+,\s]+", value.strip()) if isinstance(value, str) else value
        if not isinstance(parts, list | tuple) or not all(isinstance(p, str) for p in parts):
            return value  # let the Literal check name the problem
        names = {p.strip().lower() for p in parts if p.strip()}
        if names == {"none"}:
            return "none"
        if names and names <= {"oidc", "apikey"}:
            return "+".join(n for n in ("oidc", "apikey") if n in names)
        raise ValueError(
            f"{value!r} is not a mode: use none, oidc, apikey or oidc+apikey"
            " (a list of oidc and apikey too)"
        )

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in ASYMMETRIC_ALGORITHMS:
                raise ValueError(
                    f"algorithm {name!r} is not allowed; use some of {list(ASYMMETRIC_ALGORITHMS)}"
                    " (never 'none' nor HS*: they would accept forged tokens)"
                )
        if not value:
            raise ValueError("at least one algorithm is needed")
        return value

    @field_validator("tenant_claim")
    @classmethod
    def _valid_tenant_claim(cls, value: str) -> str:
        return ClaimRule._valid_path(value)

    @model_validator(mode="after")
    def _oidc_needs_issuer(self) -> AuthSettings:
        if self.oidc and (not self.issuer or not self.audience):
            raise ValueError(f"mode {self.mode!r} needs auth.issuer and auth.audience")
        if self.browser_client_id and not self.oidc:
            raise ValueError(
                "auth.browser_client_id logs the pages in at the OIDC issuer:"
                f" mode {self.mode!r} accepts no bearer tokens (use oidc or oidc+apikey)"
            )
        return self

    @field_validator("authorization_endpoint", "token_endpoint", "end_session_endpoint")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^/?#]+", value):
            raise ValueError(f"{value!r} is not an absolute http(s) URL")
        return value

    @field_validator("browser_scopes")
    @classmethod
    def _scope_tokens(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        for scope in value:
            if not re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", scope):
                raise ValueError(f"{scope!r} is not an OAuth 2.0 scope token (RFC 6749 3.3)")
        return value

    @property
    def oidc(self) -> bool:
        return self.mode in ("oidc", "oidc+apikey")

    @property
    def api_keys(self) -> bool:
        return self.mode in ("apikey", "oidc+apikey")

    @property
    def enabled(self) -> bool:
        return self.oidc or self.api_keys

    @property
    def browser_login(self) -> bool:
        """Whether the study browser and the viewer log in at the provider."""
        return self.oidc and bool(self.browser_client_id)

    def claim_rules(self) -> tuple[ClaimRule, ...]:
        return self.rules or DEFAULT_CLAIM_RULES


class AuditSettings(_Section):
    """The access log: one record per DICOMweb request and DIMSE association
    (``dicomcloud.domain.access``), kept in the index database and published on the
    event bus (topic ``access``)."""

    enabled: bool = True
    #: Publish each record on the event bus too (topic ``access``).
    publish: bool = True
    #: Records older than this many days are deleted (hourly); 0 keeps them forever.
    retention_days: int = Field(default=0, ge=0)
    #: Records waiting to be written; when full, a request waits up to
    #: ``block_seconds`` for room before its record is dropped (counted and logged).
    queue_size: int = Field(default=100_000, ge=100)
    block_seconds: float = Field(default=5.0, ge=0)
    #: Most records written in one transaction, and how long the writer lets records
    #: gather before writing a partial batch.
    batch: int = Field(default=500, ge=1, le=10_000)
    linger_seconds: float = Field(default=1.0, ge=0)


class RetentionSettings(_Section):
    """Deleting from the archive (``dicomcloud.services.deletion``): DICOMweb
    ``DELETE`` of a study, series or instance and ``dicomcloud delete``."""

    #: False: the archive never deletes (DELETE answers 405, the CLI refuses), e.g. a
    #: clinical archive whose corrections go through IOCM rejection notes instead.
    allow_delete: bool = True


class CorsSettings(_Section):
    """Cross-origin resource sharing (Fetch standard, CORS protocol) for viewers served
    from another origin (an OHIF or Slicer elsewhere).  No origin allowed (the default)
    sends no CORS headers at all."""

    #: Origins allowed to call the server (``https://viewer.example.org``); ``*`` any.
    allow_origins: tuple[str, ...] = ()
    #: Let the browser send cookies or an Authorization header set by the page.
    allow_credentials: bool = False
    allow_methods: tuple[str, ...] = ("GET", "POST", "PUT", "DELETE", "OPTIONS")
    allow_headers: tuple[str, ...] = (
        "Accept",
        "Authorization",
        "Content-Type",
        "If-None-Match",
        "Range",
    )
    #: Response headers a page may read: STOW-RS and QIDO-RS answer in some of them.
    expose_headers: tuple[str, ...] = (
        "Content-Type",
        "Content-Location",
        "Content-Length",
        "Content-Range",
        "Content-Disposition",
        "Location",
        "ETag",
        "Warning",
    )
    #: Seconds a browser may cache a preflight answer.
    max_age: int = Field(default=600, ge=0)

    @field_validator("allow_origins")
    @classmethod
    def _valid_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
        return value

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsSettings:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("allow_credentials needs the origins listed, not '*'")
        return self


class ViewerSettings(_Section):
    """The OHIF viewer served at ``/viewer/`` (``dicomcloud viewer install``)."""

    #: Where the viewer bundle is unpacked; empty: {data_dir}/viewer.
    dir: Path | None = None
    #: The npm registry the bundle is fetched from.
    registry: str = "https://registry.npmjs.org"
    #: The viewer version installed by default: OHIF 3 (``@ohif/app`` 3.x); a 4.x
    #: version installs OHIF v2's standalone viewer (``@ohif/viewer``, e.g. 4.12.51).
    version: str = "3.13.2"


class Settings(BaseSettings):
    """Every setting of one dicomcloud process."""

    model_config = SettingsConfigDict(
        env_prefix="DICOMCLOUD_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Path("data")
    default_tenant: str = "default"
    log_level: str = "INFO"
    server: ServerSettings = ServerSettings()
    index: IndexSettings = IndexSettings()
    storage: StorageSettings = StorageSettings()
    events: EventSettings = EventSettings()
    cache: CacheSettings = CacheSettings()

    workers: WorkerSettings = WorkerSettings()
    ingest: IngestSettings = IngestSettings()
    dimse: DimseSettings = DimseSettings()
    search: SearchSettings = SearchSettings()
    metadata: MetadataSettings = MetadataSettings()
    tenancy: TenancySettings = TenancySettings()

    auth: AuthSettings = AuthSettings()

    audit: AuditSettings = AuditSettings()
    retention: RetentionSettings = RetentionSettings()

    cors: CorsSettings = CorsSettings()
    viewer: ViewerSettings = ViewerSettings()

    @field_validator("default_tenant")
    @classmethod
    def _valid_tenant(cls, value: str) -> str:
        if not _TENANT.match(value):
            raise ValueError("must be 1-64 characters of A-Z a-z 0-9 _ - (not leading _ -)")
        return value

    @field_validator("log_level")
    @classmethod
    def _valid_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @property
    def index_url(self) -> str:
        if self.index.url:
            return self.index.url
        return f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"

    @property
    def storage_url(self) -> str:
        if self.storage.url:
            return self.storage.url
        return f"file://{(self.data_dir / 'blobs').resolve()}"

    @property
    def metadata_url(self) -> str:
        if self.metadata.url:
            return self.metadata.url
        return f"file://{(self.data_dir / 'metadata').resolve()}"

    @property
    def viewer_dir(self) -> Path:
        return self.viewer.dir if self.viewer.dir is not None else self.data_dir / "viewer"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        toml_file = settings_cls.model_config.get("toml_file")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, raising ``ConfigurationError`` naming each bad key.

    ``overrides`` are dotted or nested values from the command line; ``None`` values are
    ignored so that an option left unset falls through to the other sources.
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigurationError(f"config file {config_file} does not exist")
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        target = nested
        *parents, leaf = dotted.split("__")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    settings_cls: type[Settings] = Settings
    if config_file is not None:

        class _FromFile(Settings):
            model_config = SettingsConfigDict(toml_file=config_file)

        settings_cls = _FromFile
    try:
        if nested:
            # Command-line sections are merged over the other sources' sections.
            base = settings_cls()
            merged = base.model_dump()
            for key, value in nested.items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
            return Settings.model_validate(merged)
        return settings_cls()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from exc
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigurationError(f"cannot read configuration: {exc}") from exc


_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z0-9+.-]+://)(?P<user>[^:/@]*):(?P<pw>[^@/]*)@")


def redact_url(url: str) -> str:
    """Hide the password part of a URL (``postgresql://u:secret@h`` -> ``u:***@h``)."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def effective_config(settings: Settings) -> dict[str, Any]:
    """The settings as a plain dict with derived URLs filled in and secrets redacted."""
    data = settings.model_dump(mode="json")
    data["index"]["url"] = redact_url(settings.index_url)
    data["storage"]["url"] = redact_url(settings.storage_url)
    for secret in ("s3_access_key_id", "s3_secret_access_key", "s3_session_token"):
        if data["storage"][secret]:
            data["storage"][secret] = "***"
    data["events"]["url"] = redact_url(settings.events.url)
    data["cache"]["url"] = redact_url(settings.cache.url)
    data["metadata"]["url"] = redact_url(settings.metadata_url)
    return data
