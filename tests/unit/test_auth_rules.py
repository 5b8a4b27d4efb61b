"""Auth settings, claim rules, permissions per route and the start-up exposure check:
pure functions, no server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dicomcloud.config import ClaimRule, load_settings
from dicomcloud.errors import ConfigurationError
from dicomcloud.security.claims import claim_values, grants_of, token_tenants
from dicomcloud.security.exposure import check_exposure, is_loopback
from dicomcloud.security.middleware import required_permission
from dicomcloud.security.principal import ANY_TENANT, Permission, PermissionDenied, Principal

R, W, D, A = Permission.READ, Permission.WRITE, Permission.DELETE, Permission.ADMIN

#: Claims as Keycloak issues them (the seed's sample realm ``xdicom``).
KEYCLOAK: dict[str, Any] = {
    "iss": "https://idp/realms/xdicom",
    "sub": "lily",
    "scope": "openid profile dicom:read",
    "realm_access": {"roles": ["role_doctor", "offline_access"]},
    "resource_access": {
        "wado-rs-api": {"roles": ["image_reader"]},
        "stow-rs-api": {"roles": ["image_writer"]},
    },
    "groups": ["/radiology", "/radiology/ct"],
    "tenant": "hospital-a",
}


def test_claim_values_flatten_lists_and_split_scopes() -> None:
    assert claim_values(KEYCLOAK, "$.realm_access.roles") == ["role_doctor", "offline_access"]
    assert claim_values(KEYCLOAK, "$.resource_access['stow-rs-api'].roles") == ["image_writer"]
    assert claim_values(KEYCLOAK, "$.scope") == ["openid profile dicom:read"]
    assert claim_values(KEYCLOAK, "$.scope", split=True) == ["openid", "profile", "dicom:read"]
    assert claim_values(KEYCLOAK, "$.missing.path") == []
    assert sorted(claim_values(KEYCLOAK, "$.resource_access.*.roles")) == [
        "image_reader",
        "image_writer",
    ]


def test_keycloak_client_roles_map_to_permissions() -> None:
    rules = [
        ClaimRule(
            claim="$.resource_access['wado-rs-api'].roles",
            values=("image_reader",),
            permissions=("read",),
        ),
        ClaimRule(
            claim="$.resource_access['stow-rs-api'].roles",
            values=("image_writer",),
            permissions=("write",),
        ),
        ClaimRule(claim="$.groups", values=("/admins",), permissions=("admin", "delete")),
        ClaimRule(
            claim="$.realm_access.roles",
            values=("role_doctor",),
            permissions=("delete",),
            tenants=("hospital-b",),
        ),
    ]
    tenants = frozenset({"hospital-a", "hospital-b"})
    assert grants_of(KEYCLOAK, rules, tenants) == {
        "hospital-a": frozenset({R, W}),
        "hospital-b": frozenset({R, W, D}),
    }
    nobody = {"sub": "x", "resource_access": {"wado-rs-api": {"roles": ["other"]}}}
    assert grants_of(nobody, rules, frozenset({"hospital-a"})) == {"hospital-a": frozenset()}


def test_default_rules_are_the_scope_words() -> None:
    rules = load_settings().auth.claim_rules()
    claims = {"scope": "dicom:read dicom:write openid"}
    assert grants_of(claims, rules, frozenset({"default"})) == {"default": frozenset({R, W})}
    # a scope that only contains the word as a substring grants nothing
    assert grants_of({"scope": "xdicom:read"}, rules, frozenset({"t"})) == {"t": frozenset()}


def test_token_tenants() -> None:
    assert token_tenants(KEYCLOAK, "$.tenant", default_tenant="d", required=False) == {"hospital-a"}
    two = {"tenants": ["a", "b"]}
    assert token_tenants(two, "$.tenants", default_tenant="d", required=False) == {"a", "b"}
    assert token_tenants({}, "$.tenant", default_tenant="d", required=False) == {"d"}
    with pytest.raises(PermissionDenied, match="no tenant claim"):
        token_tenants({}, "$.tenant", default_tenant="d", required=True)


def test_principal_permissions() -> None:
    anyone = Principal("x", "none", {ANY_TENANT: frozenset({R})})
    assert anyone.may(R, "whatever") and not anyone.may(W, "whatever")
    one = Principal("y", "bearer", {"a": frozenset({A})})
    assert one.acts_for("a") and not one.acts_for("b")
    assert not one.may(R, "a")  # admin does not imply read


@pytest.mark.parametrize(
    ("method", "path", "needed"),
    [
        ("GET", "/dicom-web/studies", R),
        ("HEAD", "/dicom-web/studies/1.2/series/3.4/instances/5.6", R),
        ("GET", "/wado", R),
        ("POST", "/dicom-web/studies", W),
        ("POST", "/tenants/a/dicom-web/studies/1.2", W),
        ("DELETE", "/dicom-web/studies/1.2", D),
        ("PATCH", "/dicom-web/studies/1.2", A),
        ("GET", "/admin/tenants", A),
        ("GET", "/tenants/a/admin/reindex", A),
    ],
)
def test_permission_per_route(method: str, path: str, needed: Permission) -> None:
    assert required_permission(method, path) is needed


def test_permission_list_parsing() -> None:
    assert Permission.parse_list("read, WRITE") == {R, W}
    with pytest.raises(ValueError, match="'own' is not a valid Permission"):
        Permission.parse_list("read,own")
    with pytest.raises(ValueError, match="no permission"):
        Permission.parse_list(" , ")


@pytest.mark.parametrize("algorithm", ["none", "HS256", "HS512", "RS1"])
def test_only_asymmetric_algorithms_are_allowed(algorithm: str) -> None:
    with pytest.raises(ConfigurationError, match=f"auth.algorithms: .*'{algorithm}' is not"):
        load_settings(auth__algorithms=["RS256", algorithm])


def test_oidc_needs_issuer_and_audience() -> None:
    with pytest.raises(ConfigurationError, match=r"needs auth\.issuer and auth\.audience"):
        load_settings(auth__mode="oidc", auth__issuer="https://idp")
    settings = load_settings(auth__mode="oidc", auth__issuer="https://idp", auth__audience="a")
    assert settings.auth.oidc and not settings.auth.api_keys


def test_bad_claim_path_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="is not a JSONPath expression"):
        load_settings(auth__rules=[{"claim": "$.[[", "values": ["x"], "permissions": ["read"]}])
    with pytest.raises(ConfigurationError, match="permissions"):
        load_settings(auth__rules=[{"claim": "$.scope", "values": ["x"], "permissions": ["own"]}])


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("archive.example.org", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_exposure_check() -> None:
    check_exposure(load_settings())  # the embedded default: loopback, no auth
    with pytest.raises(ConfigurationError, match=r"refusing to serve on 0\.0\.0\.0"):
        check_exposure(load_settings(server__host="0.0.0.0"))
    check_exposure(load_settings(server__host="0.0.0.0", auth__mode="none"))  # explicit
    check_exposure(load_settings(server__host="0.0.0.0", auth__mode="apikey"))


@pytest.mark.parametrize(
    ("given", "mode"),
    [
        (["oidc", "apikey"], "oidc+apikey"),
        ("apikey+oidc", "oidc+apikey"),
        ("oidc, apikey", "oidc+apikey"),
        (["apikey"], "apikey"),
        ("NONE", "none"),
    ],
)
def test_mode_spellings(given: object, mode: str) -> None:
    settings = load_settings(auth__mode=given, auth__issuer="https://idp", auth__audience="a")
    assert settings.auth.mode == mode


@pytest.mark.parametrize("given", ["basic", ["oidc", "none"], "", 3])
def test_bad_modes_are_configuration_errors(given: object) -> None:
    with pytest.raises(ConfigurationError, match=r"auth\.mode"):
        load_settings(auth__mode=given)


def test_readme_example_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    config = tmp_path / "dicomcloud.toml"
    config.write_text(
        """
[server]
host = "0.0.0.0"

[auth]
mode = "oidc+apikey"
issuer = "https://idp.example.org/realms/radiology"
audience = "dicomcloud"

[[auth.rules]]
claim = "$.realm_access.roles"
values = ["radiologist"]
permissions = ["read", "write"]

[[auth.rules]]
claim = "$.resource_access['dicomcloud'].roles"
values = ["archive-admin"]
permissions = ["delete", "admin"]
""",
        encoding="utf-8",
    )
    settings = load_settings(config)
    check_exposure(settings)
    claims = {"realm_access": {"roles": ["radiologist"]}, "tenant": "t"}
    assert grants_of(claims, settings.auth.claim_rules(), frozenset({"t"})) == {
        "t": frozenset({R, W})
    }


def test_auth_settings_survive_the_trip_to_worker_processes() -> None:
    """``serve --workers N`` hands the settings to each worker as JSON."""
    from dicomcloud.config import Settings

    settings = load_settings(
        auth__mode=["apikey", "oidc"],
        auth__issuer="https://idp",
        auth__audience="a",
        auth__rules=[{"claim": "$.groups", "values": ["/ct"], "permissions": ["read"]}],
    )
    again = Settings.model_validate(settings.model_dump(mode="json"))
    assert again.auth == settings.auth
    assert again.auth.mode == "oidc+apikey"


def test_check_config_reports_a_public_address_without_auth(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from dicomcloud import cli

    monkeypatch.chdir(tmp_path)
    unset: dict[str, str | None] = {"DICOMCLOUD_AUTH__MODE": None}
    public = {**unset, "DICOMCLOUD_SERVER__HOST": "0.0.0.0"}
    refused = CliRunner().invoke(cli.app, ["check-config"], env=public)
    assert refused.exit_code == 2
    assert "refusing to serve on 0.0.0.0 without authentication" in refused.stderr
    allowed = CliRunner().invoke(
        cli.app, ["check-config"], env={**public, "DICOMCLOUD_AUTH__MODE": "none"}
    )
    assert allowed.exit_code == 0, allowed.stderr
    assert json.loads(allowed.stdout)["auth"]["mode"] == "none"
