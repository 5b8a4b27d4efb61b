"""Typed settings: defaults, sources and their precedence, validation naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dicomcloud.config import effective_config, load_settings, redact_url
from dicomcloud.domain.records import DuplicatePolicy
from dicomcloud.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("DICOMCLOUD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no .env of the repository


def test_defaults_derive_urls_from_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "d")

    assert settings.index_url == f"sqlite:///{(tmp_path / 'd' / 'index.sqlite3').resolve()}"
    assert settings.storage_url == f"file://{(tmp_path / 'd' / 'blobs').resolve()}"
    assert settings.server.http_port == 8080
    assert settings.server.dicom_port == 11112
    assert settings.ingest.duplicate_policy is DuplicatePolicy.KEEP_FIRST
    assert settings.storage.fsync is True


def test_settings_are_immutable(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)

    with pytest.raises(ValidationError):
        settings.server.http_port = 1  # type: ignore[misc]


def test_command_line_overrides_merge_into_their_section(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DICOMCLOUD_SERVER__AE_TITLE", "FROMENV")

    settings = load_settings(server__http_port=9000, server__dicom_port=None)

    assert settings.server.http_port == 9000
    assert settings.server.dicom_port == 11112  # None: left to the other sources
    assert settings.server.ae_title == "FROMENV"  # the rest of the section survives


def test_precedence_environment_over_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[server]\nhttp_port = 8001\ndicom_port = 11001\n")
    monkeypatch.setenv("DICOMCLOUD_SERVER__HTTP_PORT", "8002")

    settings = load_settings(config)

    assert settings.server.http_port == 8002
    assert settings.server.dicom_port == 11001


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DICOMCLOUD_INGEST__MAX_BATCH=7\n")

    assert load_settings().ingest.max_batch == 7


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"server__http_port": 70000}, "server.http_port"),
        ({"server__ae_title": "BACK\\SLASH"}, "server.ae_title"),
        ({"server__ae_title": "SEVENTEEN_CHARS_X"}, "server.ae_title"),
        ({"default_tenant": "_hidden"}, "default_tenant"),
        ({"log_level": "chatty"}, "log_level"),
        ({"ingest__duplicate_policy": "sometimes"}, "ingest.duplicate_policy"),
        ({"ingest__max_request_bytes": 10}, "ingest.max_request_bytes"),
    ],
)
def test_invalid_values_name_their_key(overrides: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(**overrides)

    assert key in raised.value.reason


def test_unknown_toml_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[ingest]\nmax_batchh = 3\n")

    with pytest.raises(ConfigurationError, match=r"ingest\.max_batchh"):
        load_settings(config)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://user:secret@db:5432/x", "postgresql://user:***@db:5432/x"),
        ("mysql+aiomysql://root:p%40ss@h/db", "mysql+aiomysql://root:***@h/db"),
        ("postgresql://user@db/x", "postgresql://user@db/x"),
        ("sqlite:////data/index.sqlite3", "sqlite:////data/index.sqlite3"),
        ("redis://:token@cache:6379/0", "redis://:***@cache:6379/0"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_effective_config_hides_passwords() -> None:
    settings = load_settings(index__url="postgresql://u:hunter2@db/x")

    shown = effective_config(settings)

    assert shown["index"]["url"] == "postgresql://u:***@db/x"
    assert "hunter2" not in str(shown)


def test_server_roles_from_the_command_line_list() -> None:
    """``serve --role web,dimse`` (issue 5 point 5): the comma-separated list; an
    unknown or missing role names the key."""
    from dicomcloud.config import load_settings
    from dicomcloud.errors import ConfigurationError

    assert load_settings(server__roles="web, dimse").server.roles == ("web", "dimse")
    assert load_settings(server__roles=["worker"]).server.roles == ("worker",)
    assert load_settings().server.roles == ("web", "dimse", "worker")
    for bad in ("frontend", ""):
        with pytest.raises(ConfigurationError, match="roles"):
            load_settings(server__roles=bad)
