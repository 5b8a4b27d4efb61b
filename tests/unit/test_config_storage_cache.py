"""``[storage] s3_*`` and ``[cache]`` settings: validated, and secrets never shown."""

from __future__ import annotations

import pytest

from dicomcloud.app import open_archive_cache, s3_options
from dicomcloud.cache import MemoryCache
from dicomcloud.config import effective_config, load_settings
from dicomcloud.errors import ConfigurationError


def test_check_config_hides_s3_and_redis_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMCLOUD_STORAGE__S3_SECRET_ACCESS_KEY", "very-secret")
    monkeypatch.setenv("DICOMCLOUD_STORAGE__S3_SESSION_TOKEN", "token-secret")
    settings = load_settings(
        storage__url="s3://bucket/prefix?endpoint_url=http://minio:9000",
        storage__s3_access_key_id="AKIAEXAMPLE",
        cache__url="redis://:hunter2@cache:6379/0",
    )

    shown = effective_config(settings)

    assert shown["storage"]["s3_access_key_id"] == "***"
    assert shown["storage"]["s3_secret_access_key"] == "***"
    assert shown["cache"]["url"] == "redis://:***@cache:6379/0"
    assert "very-secret" not in str(shown)
    assert "token-secret" not in str(shown)
    assert "hunter2" not in str(shown)
    assert "AKIAEXAMPLE" not in str(shown)
    assert s3_options(settings).secret_access_key == "very-secret"


def test_defaults_are_the_embedded_ones() -> None:
    settings = load_settings()

    assert settings.cache.url == "memory://"
    assert isinstance(open_archive_cache(settings).backend, MemoryCache)
    assert effective_config(settings)["storage"]["s3_secret_access_key"] == ""


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"storage__s3_part_size": 1024}, "storage.s3_part_size"),
        ({"cache__max_entries": 0}, "cache.max_entries"),
        ({"cache__qido_ttl_seconds": -1}, "cache.qido_ttl_seconds"),
    ],
)
def test_bad_values_name_their_key(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named.replace(".", r"\.")):
        load_settings(**overrides)
