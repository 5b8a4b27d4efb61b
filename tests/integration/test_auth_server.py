"""Authentication and authorisation of DICOMweb against a real ``dicomcloud serve``
(``auth.mode = "oidc+apikey"``), with tokens from a local OpenID Connect provider the
test starts (``oidc_issuer``) and API keys made with ``dicomcloud apikey``.

Every refusal is checked as a client sees it: the status (401 vs 403, RFC 9110 15.5.2,
15.5.4) and the ``WWW-Authenticate`` challenge (RFC 6750 3)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from conftest import DICOMCLOUD, RealServer, clean_environment, running_server
from dicomcloud.domain.access import WADO_RS_METADATA
from integration.oidc_issuer import AUDIENCE, LocalIssuer, local_issuer, rsa_key
from integration.support import multipart_related, new_instance

pytestmark = [pytest.mark.timeout(240)]

#: Claims -> permissions: the default scope words plus a Keycloak-style realm role.
RULES = [
    {"claim": "$.scope", "split": True, "values": ["dicom:read"], "permissions": ["read"]},
    {"claim": "$.scope", "split": True, "values": ["dicom:write"], "permissions": ["write"]},
    {
        "claim": "$.realm_access.roles",
        "values": ["radiologist"],
        "permissions": ["read", "write"],
    },
]


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with local_issuer() as running:
        yield running


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, issuer: LocalIssuer) -> Iterator[RealServer]:
    env = {
        "DICOMCLOUD_AUTH__MODE": "oidc+apikey",
        "DICOMCLOUD_AUTH__ISSUER": issuer.url,  # keys found by discovery
        "DICOMCLOUD_AUTH__AUDIENCE": AUDIENCE,
        "DICOMCLOUD_AUTH__LEEWAY_SECONDS": "5",
        "DICOMCLOUD_AUTH__JWKS_MIN_REFRESH_SECONDS": "0",
        "DICOMCLOUD_AUTH__RULES": json.dumps(RULES),
    }
    with running_server(tmp_path_factory.mktemp("auth") / "data", env) as server:
        yield server


def qido(server: RealServer, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{server.dicomweb_url}/studies", headers=headers or {}, timeout=30)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge(response: httpx.Response, scheme: str = "Bearer") -> dict[str, str]:
    """The parameters of the ``scheme`` challenge of a response (RFC 9110 11.6.1)."""
    values = [v for v in response.headers.get_list("www-authenticate") if v.startswith(scheme)]
    assert len(values) == 1, response.headers.get_list("www-authenticate")
    return dict(re.findall(r'(\w+)="([^"]*)"', values[0]))


def stow(server: RealServer, headers: dict[str, str]) -> tuple[httpx.Response, bytes, str]:
    instance = new_instance()
    body, content_type = multipart_related([instance.data])
    response = httpx.post(
        f"{server.dicomweb_url}/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json", **headers},
        timeout=60,
    )
    path = f"/studies/{instance.study}/series/{instance.series}/instances/{instance.sop}"
    return response, instance.data, path


# --- who is let in ---------------------------------------------------------------------


def test_no_credentials_is_401_with_both_challenges(secured: RealServer) -> None:
    response = qido(secured)
    assert response.status_code == 401
    assert challenge(response) == {"realm": "dicomcloud"}  # no error code: RFC 6750 3.1
    assert challenge(response, "ApiKey") == {"realm": "dicomcloud"}


@pytest.mark.parametrize(
    "path",
    [
        "/dicom-web/studies",
        "/dicom-web/series",
        "/dicom-web/instances",
        "/dicom-web/studies/1.2.3",
        "/dicom-web/studies/1.2.3/metadata",
        "/dicom-web/studies/1.2.3/series/1.2.4/instances/1.2.5",
        "/dicom-web/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/1",
        "/dicom-web/studies/1.2.3/series/1.2.4/instances/1.2.5/bulkdata/7FE00010",
        "/dicom-web/studies/1.2.3/rendered",
        "/dicom-web/studies/1.2.3/thumbnail",
        "/wado?requestType=WADO&studyUID=1.2.3&seriesUID=1.2.4&objectUID=1.2.5",
        "/dicom-web/no-such-resource",
    ],
)
def test_every_dicomweb_resource_needs_credentials(secured: RealServer, path: str) -> None:
    response = httpx.get(secured.base_url + path, timeout=30)
    assert response.status_code == 401, response.text
    assert challenge(response)["realm"] == "dicomcloud"


def test_health_probes_stay_open(secured: RealServer) -> None:
    assert httpx.get(f"{secured.base_url}/healthz", timeout=30).status_code == 200
    assert httpx.get(f"{secured.base_url}/readyz", timeout=30).status_code == 200


def test_rsa_and_ec_tokens_are_accepted(secured: RealServer, issuer: LocalIssuer) -> None:
    for key in (issuer.key("rsa"), issuer.key("ec")):
        response = qido(secured, bearer(issuer.token(key=key)))
        assert response.status_code in (200, 204), (key.kid, response.text)


@pytest.mark.parametrize(
    ("case", "description"),
    [
        ("expired", "expired"),
        ("not yet valid", "not valid yet"),
        ("wrong issuer", "issuer"),
        ("wrong audience", "aud"),
        ("alg none", "'none' is not allowed"),
        ("HS256 keyed with the public key", "'HS256' is not allowed"),
        ("unknown kid", "kid 'stranger'"),
        ("signed by another key with a known kid", "signature"),
        ("no exp", "exp"),
        ("not a JWT", "not a JWS"),
    ],
)
def test_invalid_tokens_are_401_invalid_token(
    secured: RealServer, issuer: LocalIssuer, case: str, description: str
) -> None:
    now = int(time.time())
    tokens = {
        "expired": lambda: issuer.token(iat=now - 3600, nbf=now - 3600, exp=now - 60),
        "not yet valid": lambda: issuer.token(nbf=now + 600, exp=now + 1200),
        "wrong issuer": lambda: issuer.token(iss="https://evil.example.org"),
        "wrong audience": lambda: issuer.token(aud="another-service"),
        "alg none": issuer.unsigned_token,
        "HS256 keyed with the public key": issuer.hs256_with_public_key,
        "unknown kid": lambda: issuer.token(key=rsa_key("stranger")),
        "signed by another key with a known kid": lambda: issuer.token(
            key=rsa_key("impostor"), kid=issuer.key("rsa").kid
        ),
        "no exp": lambda: issuer.token(exp=None),
        "not a JWT": lambda: "not-a-token",
    }
    response = qido(secured, bearer(tokens[case]()))
    assert response.status_code == 401, response.text
    params = challenge(response)
    assert params["error"] == "invalid_token"
    assert description in params["error_description"], params
    assert description in response.json()["error"]


def test_missing_permission_is_403_insufficient_scope(
    secured: RealServer, issuer: LocalIssuer
) -> None:
    no_scope = qido(secured, bearer(issuer.token(scope="openid")))
    assert no_scope.status_code == 403
    assert challenge(no_scope)["error"] == "insufficient_scope"
    assert "lacks the read permission in tenant default" in no_scope.json()["error"]

    reader = bearer(issuer.token(scope="dicom:read"))
    response, _data, path = stow(secured, reader)
    assert response.status_code == 403
    assert "write permission" in challenge(response)["error_description"]
    assert httpx.get(secured.dicomweb_url + path, headers=reader).status_code == 404


def test_token_of_another_tenant_is_403(secured: RealServer, issuer: LocalIssuer) -> None:
    token = issuer.token(scope="dicom:read dicom:write", tenant="hospital-b")
    response = qido(secured, bearer(token))
    assert response.status_code == 403
    assert "may not act for tenant default" in response.json()["error"]
    mine = issuer.token(scope="dicom:read", tenant=["hospital-b", "default"])
    assert qido(secured, bearer(mine)).status_code in (200, 204)


def test_write_then_read_with_tokens(secured: RealServer, issuer: LocalIssuer) -> None:
    writer = bearer(issuer.token(key=issuer.key("ec"), scope="dicom:write"))
    response, data, path = stow(secured, writer)
    assert response.status_code == 200, response.text
    # write does not imply read
    assert httpx.get(secured.dicomweb_url + path, headers=writer).status_code == 403
    reader = bearer(issuer.token(scope="dicom:read"))
    got = httpx.get(secured.dicomweb_url + path, headers={"Accept": "*/*", **reader}, timeout=30)
    assert got.status_code == 200
    assert data in got.content


def test_claim_rule_on_realm_roles(secured: RealServer, issuer: LocalIssuer) -> None:
    token = issuer.token(scope=None, realm_access={"roles": ["offline_access", "radiologist"]})
    response, _data, _path = stow(secured, bearer(token))
    assert response.status_code == 200, response.text
    other_role = issuer.token(scope=None, realm_access={"roles": ["patient"]})
    assert qido(secured, bearer(other_role)).status_code == 403


def test_malformed_bearer_header_is_400_invalid_request(secured: RealServer) -> None:
    response = qido(secured, {"Authorization": "Bearer"})
    assert response.status_code == 400
    assert challenge(response)["error"] == "invalid_request"
    unknown = qido(secured, {"Authorization": "Basic YWxpY2U6c2VjcmV0"})
    assert unknown.status_code == 401
    assert challenge(unknown) == {"realm": "dicomcloud"}


def test_dicomweb_client_with_a_bearer_token(secured: RealServer, issuer: LocalIssuer) -> None:
    token = issuer.token(scope="dicom:read dicom:write")
    client = DICOMwebClient(secured.dicomweb_url, headers=bearer(token))
    instance = new_instance()
    ds = dcmread(__import__("io").BytesIO(instance.data))
    client.store_instances([ds])
    found = client.search_for_instances(instance.study)
    assert [item["00080018"]["Value"][0] for item in found] == [instance.sop]
    back = client.retrieve_instance(instance.study, instance.series, instance.sop)
    assert back.SOPInstanceUID == instance.sop

    anonymous = DICOMwebClient(secured.dicomweb_url)
    with pytest.raises(Exception, match="401"):
        anonymous.search_for_studies()


def test_key_rotation(secured: RealServer, issuer: LocalIssuer) -> None:
    old = issuer.token()
    assert qido(secured, bearer(old)).status_code in (200, 204)
    issuer.rotate()
    for kind in ("rsa", "ec"):
        fresh = issuer.token(key=issuer.key(kind))
        assert qido(secured, bearer(fresh)).status_code in (200, 204), kind
    # the server now holds the new set: the retired key signs nothing any more
    retired = qido(secured, bearer(old))
    assert retired.status_code == 401
    assert "kid 'rsa-1'" in challenge(retired)["error_description"]


# --- API keys --------------------------------------------------------------------------


def apikey_cli(server: RealServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DICOMCLOUD), "apikey", *args, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        env=clean_environment(),
        cwd=server.data_dir.parent,
        timeout=120,
        check=False,
    )


def test_api_key_create_use_revoke(secured: RealServer) -> None:
    created = apikey_cli(secured, "create", "--permissions", "read", "--name", "ai-pipeline")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("dck_")
    key_id = key.removeprefix("dck_").split(".")[0]

    assert qido(secured, {"X-API-Key": key}).status_code in (200, 204)
    assert qido(secured, {"Authorization": f"ApiKey {key}"}).status_code in (200, 204)
    response, _data, _path = stow(secured, {"X-API-Key": key})
    assert response.status_code == 403
    assert "lacks the write permission" in response.json()["error"]
    assert response.headers.get_list("www-authenticate") == []  # no Bearer advice for a key

    listed = json.loads(apikey_cli(secured, "list", "--json").stdout)
    mine = next(row for row in listed if row["id"] == key_id)
    assert (mine["name"], mine["permissions"], mine["revoked"]) == ("ai-pipeline", "read", "")
    assert mine["last used"] != ""
    assert key.split(".")[1] not in json.dumps(listed)
    stored = (secured.data_dir / "index.sqlite3").read_bytes()
    assert key.split(".")[1].encode() not in stored

    revoked = apikey_cli(secured, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    refused = qido(secured, {"X-API-Key": key})
    assert refused.status_code == 401
    assert refused.json()["error"] == "the API key has been revoked"
    assert challenge(refused, "ApiKey") == {"realm": "dicomcloud"}
    assert challenge(refused) == {"realm": "dicomcloud"}  # no token was refused
    assert apikey_cli(secured, "revoke", key_id).returncode == 1


def test_forged_api_keys_are_401(secured: RealServer) -> None:
    created = apikey_cli(secured, "create", "--permissions", "read,write", "--name", "x")
    key = created.stdout.strip()
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for forged in (wrong_secret, "dck_0000000000000000." + "A" * 43, "garbage"):
        response = qido(secured, {"X-API-Key": forged})
        assert response.status_code == 401, forged
        assert response.json()["error"] in (
            "the API key is not valid",
            "the API key is malformed (dck_<id>.<secret>)",
        )


def test_apikey_cli_rejects_bad_input(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            str(DICOMCLOUD),
            "apikey",
            "create",
            "--permissions",
            "read,own",
            "--name",
            "x",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        env=clean_environment(),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2
    assert "'own' is not a valid Permission" in run.stderr


# --- secure by default -----------------------------------------------------------------


def test_serve_refuses_a_public_address_without_auth_mode(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            str(DICOMCLOUD),
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--host",
            "0.0.0.0",
            "--http-port",
            "0",
            "--dicom-port",
            "0",
        ],
        capture_output=True,
        text=True,
        env=clean_environment(),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1
    assert "refusing to serve on 0.0.0.0 without authentication" in run.stderr


def test_tenant_paths_follow_the_token_and_every_request_is_recorded(
    secured: RealServer, issuer: LocalIssuer
) -> None:
    """On ``/tenants/{tenant}/dicom-web`` the token's tenant must be the path's (403
    otherwise, guessed UIDs included), and each request, refused or not, leaves an
    access record naming the token's subject and the tenant, never the token."""
    token = issuer.token(scope="dicom:read dicom:write", tenant="north", sub="dr-north")
    north, south = (f"{secured.base_url}/tenants/{t}/dicom-web" for t in ("north", "south"))
    instance = new_instance()
    body, content_type = multipart_related([instance.data])
    headers = {**bearer(token), "Accept": "application/dicom+json"}

    stored = httpx.post(
        f"{north}/studies",
        content=body,
        headers={**headers, "Content-Type": content_type},
        timeout=60,
    )
    found = httpx.get(
        f"{north}/studies", params={"StudyInstanceUID": instance.study}, headers=headers
    )
    guessed = httpx.get(f"{south}/studies/{instance.study}/metadata", headers=headers)
    default = httpx.get(
        f"{secured.dicomweb_url}/studies", params={"StudyInstanceUID": instance.study},
        headers=headers,
    )  # fmt: skip

    assert stored.status_code == 200, stored.text
    assert [s["0020000D"]["Value"] for s in found.json()] == [[instance.study]]
    assert guessed.status_code == 403
    assert "may not act for tenant south" in guessed.json()["error"]
    assert default.status_code == 403  # the token does not act for the default tenant

    def records() -> list[dict[str, Any]]:
        shown = subprocess.run(
            [str(DICOMCLOUD), "audit", "--json", "--principal", "dr-north", "--limit", "50",
             "--data-dir", str(secured.data_dir)],
            capture_output=True, text=True, env=clean_environment(),
            cwd=secured.data_dir.parent, timeout=120, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]

    deadline = time.monotonic() + 60
    while len(found_records := records()) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)  # records are written in batches, about once a second
    by_path = {r["path"]: r for r in found_records}
    assert by_path["/tenants/north/dicom-web/studies"]["tenant_id"] == "north"
    assert {r["status"] for r in found_records} >= {200, 403}
    refused = by_path[f"/tenants/south/dicom-web/studies/{instance.study}/metadata"]
    assert (refused["tenant_id"], refused["status"]) == ("south", 403)
    assert refused["action"] == WADO_RS_METADATA  # what it asked for, though refused
    assert all(r["principal"] == "dr-north" for r in found_records)
    assert token not in json.dumps(found_records)
