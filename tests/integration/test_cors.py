"""CORS (Fetch standard, CORS protocol) for viewers served from another origin:
preflight and actual requests for the configured origins, nothing for others, no CORS
header at all by default."""

from __future__ import annotations

import pytest

from conftest import ArchiveFactory
from dicomcloud.config import load_settings
from dicomcloud.errors import ConfigurationError
from integration.support import new_instance

pytestmark = pytest.mark.timeout(120)

VIEWER = "https://viewer.example.org"


async def test_by_default_no_cors_headers_are_sent(make_archive: ArchiveFactory) -> None:
    local = await make_archive()

    search = await local.client.get("/dicom-web/studies", headers={"Origin": VIEWER})
    preflight = await local.client.options(
        "/dicom-web/studies",
        headers={"Origin": VIEWER, "Access-Control-Request-Method": "GET"},
    )

    assert search.status_code == 200
    assert "access-control-allow-origin" not in search.headers
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code == 405


async def test_preflight_of_an_allowed_origin(make_archive: ArchiveFactory) -> None:
    local = await make_archive(cors__allow_origins=[VIEWER], cors__allow_credentials=True)

    response = await local.client.options(
        "/dicom-web/studies",
        headers={
            "Origin": VIEWER,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == VIEWER
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert response.headers["access-control-max-age"] == "600"


async def test_actual_requests_expose_the_dicomweb_headers(make_archive: ArchiveFactory) -> None:
    local = await make_archive(cors__allow_origins=[VIEWER])
    instance = new_instance()

    stored = await local.stow([instance.data], headers={"Origin": VIEWER})
    search = await local.client.get(
        "/dicom-web/studies", params={"limit": 1}, headers={"Origin": VIEWER}
    )

    assert stored.status_code == 200
    for response in (stored, search):
        assert response.headers["access-control-allow-origin"] == VIEWER
        exposed = response.headers["access-control-expose-headers"].lower()
        for header in ("content-type", "content-location", "warning", "etag"):
            assert header in exposed
    assert "access-control-allow-credentials" not in search.headers


async def test_an_origin_not_listed_gets_no_cors_headers(make_archive: ArchiveFactory) -> None:
    local = await make_archive(cors__allow_origins=[VIEWER])

    search = await local.client.get(
        "/dicom-web/studies", headers={"Origin": "https://other.example.org"}
    )
    preflight = await local.client.options(
        "/dicom-web/studies",
        headers={"Origin": "https://other.example.org", "Access-Control-Request-Method": "GET"},
    )

    assert search.status_code == 200
    assert "access-control-allow-origin" not in search.headers
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"cors__allow_origins": ["viewer.example.org"]}, "is not an origin"),
        ({"cors__allow_origins": ["https://viewer.example.org/app"]}, "is not an origin"),
        (
            {"cors__allow_origins": ["*"], "cors__allow_credentials": True},
            "allow_credentials needs the origins listed",
        ),
    ],
)
def test_bad_cors_settings_are_refused(overrides: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        load_settings(**overrides)
