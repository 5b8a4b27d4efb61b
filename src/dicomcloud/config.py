"""Typed settings: TOML file, ``DICOMCLOUD_*`` environment variables and ``.env``.

Precedence, highest first: command-line options, environment variables, ``.env``, the
TOML file given with ``--config``, built-in defaults.  Nested keys use ``__`` in the
environment (``DICOMCLOUD_SERVER__HTTP_PORT=8042``).  Settings are validated once at
start-up and are immutable afterwards; a bad value is an error naming its key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dicomcloud.domain.records import DuplicatePolicy
from dicomcloud.errors import ConfigurationError

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 6.2 AE: no backslash
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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


class StorageSettings(_Section):
    """Blob storage of the Part-10 files (``file:///path``)."""

    url: str = ""  # empty: file://{data_dir}/blobs
    fsync: bool = True  # never turn off in production: acknowledged means durable


class EventSettings(_Section):
    """The event bus fed by the outbox relay (``memory://``)."""

    url: str = "memory://"


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


class DimseSettings(_Section):
    """DICOM upper layer options (PS3.8)."""

    max_pdu_length: int = Field(default=0, ge=0)  # 0: unlimited
    network_timeout: float = Field(default=60.0, gt=0)
    acse_timeout: float = Field(default=30.0, gt=0)
    dimse_timeout: float = Field(default=60.0, gt=0)
    max_associations: int = Field(default=64, ge=1, le=1000)


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
    ingest: IngestSettings = IngestSettings()
    dimse: DimseSettings = DimseSettings()

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
    data["events"]["url"] = redact_url(settings.events.url)
    return data
