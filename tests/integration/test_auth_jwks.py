"""The JWK Set cache against the local OpenID Connect provider, and the guard in front of
the in-process ASGI app in the modes a ``dicomcloud serve`` test does not cover."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from buses import REDIS_URL, drop_redis_prefix, require_redis
from conftest import ArchiveFactory, free_port
from dicomcloud.cache import FailSafeCache
from dicomcloud.cache.redis_cache import RedisCache
from dicomcloud.config import load_settings
from dicomcloud.security.jwks import JwksCache
from dicomcloud.security.principal import AuthenticationFailed, Permission, ProviderUnavailable
from dicomcloud.security.tokens import TokenValidator
from integration.oidc_issuer import AUDIENCE, LocalIssuer, local_issuer, rsa_key


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with local_issuer() as running:
        yield running


async def test_concurrent_first_requests_fetch_the_set_once(issuer: LocalIssuer) -> None:
    cache = JwksCache(issuer=issuer.url)  # found by discovery
    found = await asyncio.gather(*(cache.jwk("rsa-1") for _ in range(10)))
    assert {jwk["kid"] for jwk in found} == {"rsa-1"}
    assert issuer.jwks_requests == 1


async def test_unknown_kids_refetch_at_most_every_min_refresh(issuer: LocalIssuer) -> None:
    cache = JwksCache(issuer=issuer.url, min_refresh=3600)
    await cache.jwk("ec-1")
    for _ in range(5):
        with pytest.raises(AuthenticationFailed, match="kid 'stranger'"):
            await cache.jwk("stranger")
    assert issuer.jwks_requests == 1  # invented kids cannot make it hammer the provider


async def test_rotated_keys_are_found_by_one_refetch(issuer: LocalIssuer) -> None:
    cache = JwksCache(issuer=issuer.url, jwks_url=f"{issuer.url}/jwks", min_refresh=0)
    await cache.jwk("rsa-1")
    issuer.rotate()
    assert (await cache.jwk("rsa-2"))["kid"] == "rsa-2"
    assert issuer.jwks_requests == 2
    with pytest.raises(AuthenticationFailed, match="kid 'rsa-1'"):
        await cache.jwk("rsa-1")  # retired


async def test_known_keys_survive_a_failed_refresh(issuer: LocalIssuer) -> None:
    cache = JwksCache(issuer=issuer.url, jwks_url=f"{issuer.url}/jwks", min_refresh=0)
    await cache.jwk("rsa-1")
    issuer.stop()
    with pytest.raises(AuthenticationFailed, match="kid 'stranger'"):
        await cache.jwk("stranger")
    assert (await cache.jwk("rsa-1"))["kid"] == "rsa-1"


async def test_discovery_must_name_the_configured_issuer(issuer: LocalIssuer) -> None:
    cache = JwksCache(issuer=issuer.url + "/")  # OIDC Discovery 4.3: exact match
    with pytest.raises(ProviderUnavailable, match="names issuer"):
        await cache.jwk("rsa-1")


async def test_unreachable_provider_is_503(make_archive: ArchiveFactory) -> None:
    issuer = LocalIssuer()  # never started: only its token signing is used
    nowhere = f"http://127.0.0.1:{free_port()}"
    local = await make_archive(auth__mode="oidc", auth__issuer=nowhere, auth__audience=AUDIENCE)
    token = issuer.token(iss=nowhere)
    response = await local.client.get(
        "/dicom-web/studies", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 503
    assert "cannot fetch the identity provider's discovery document" in response.json()["error"]


async def test_apikey_mode_refuses_bearer_tokens(make_archive: ArchiveFactory) -> None:
    local = await make_archive(auth__mode="apikey")
    response = await local.client.get(
        "/dicom-web/studies", headers={"Authorization": "Bearer abc.def.ghi"}
    )
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == ['ApiKey realm="dicomcloud"']
    assert response.json()["error"] == "bearer tokens are not accepted here"
    assert (await local.client.get("/healthz")).status_code == 200
    # a CORS preflight carries no credentials; it reaches the app (no OPTIONS route: 405)
    assert (await local.client.options("/dicom-web/studies")).status_code == 405


async def test_explicit_none_and_unset_modes_need_no_credentials(
    make_archive: ArchiveFactory,
) -> None:
    for overrides in ({"auth__mode": "none"}, {}):
        local = await make_archive(**overrides)
        response = await local.client.get("/dicom-web/studies")
        assert response.status_code in (200, 204), overrides


async def test_token_signed_by_a_key_of_another_type_is_refused(
    make_archive: ArchiveFactory, issuer: LocalIssuer
) -> None:
    local = await make_archive(auth__mode="oidc", auth__issuer=issuer.url, auth__audience=AUDIENCE)
    # An RS256 token whose kid names the issuer's EC key: the key cannot verify it.
    token = issuer.token(key=rsa_key("x"), kid="ec-1")
    response = await local.client.get(
        "/dicom-web/studies", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert "not its key's ('ES256')" in response.json()["error"]


async def test_a_remembered_token_still_expires(issuer: LocalIssuer) -> None:
    settings = load_settings(
        auth__mode="oidc", auth__issuer=issuer.url, auth__audience=AUDIENCE, auth__leeway_seconds=0
    )
    validator = TokenValidator(settings.auth, default_tenant="default")
    exp = int(time.time()) + 2
    token = issuer.token(exp=exp)
    assert (await validator.principal(token)).may(Permission.READ, "default")
    assert (await validator.principal(token)).subject == "alice"  # remembered
    # the condition is the wall clock itself: sleep until just past exp
    await asyncio.sleep(max(0.0, exp + 0.2 - time.time()))
    with pytest.raises(AuthenticationFailed, match="expired"):
        await validator.principal(token)
    assert issuer.jwks_requests == 1


def _shared_redis_cache(prefix: str) -> FailSafeCache:
    require_redis()
    return FailSafeCache(RedisCache(REDIS_URL, key_prefix=f"{prefix}:"))


async def test_nodes_sharing_a_redis_cache_fetch_the_set_once(issuer: LocalIssuer) -> None:
    """Two nodes (two validators' key caches) on one Redis: the provider is asked once."""
    prefix = f"dicomcloud-test:{uuid.uuid4().hex}"
    one, two = _shared_redis_cache(prefix), _shared_redis_cache(prefix)
    try:
        first = JwksCache(issuer=issuer.url, shared=one)
        second = JwksCache(issuer=issuer.url, shared=two)
        assert (await first.jwk("rsa-1"))["kid"] == "rsa-1"
        assert (await second.jwk("rsa-1"))["kid"] == "rsa-1"
        assert issuer.jwks_requests == 1
        assert (first.provider_fetches, second.provider_fetches) == (1, 0)
    finally:
        await one.close()
        await two.close()
        drop_redis_prefix(prefix)


async def test_a_rotation_seen_by_one_node_is_shared(issuer: LocalIssuer) -> None:
    prefix = f"dicomcloud-test:{uuid.uuid4().hex}"
    one, two = _shared_redis_cache(prefix), _shared_redis_cache(prefix)
    try:
        url = f"{issuer.url}/jwks"
        first = JwksCache(issuer=issuer.url, jwks_url=url, min_refresh=0, shared=one)
        second = JwksCache(issuer=issuer.url, jwks_url=url, min_refresh=0, shared=two)
        await first.jwk("rsa-1")
        await second.jwk("rsa-1")
        issuer.rotate()
        assert (await first.jwk("rsa-2"))["kid"] == "rsa-2"  # asks the provider
        assert (await second.jwk("rsa-2"))["kid"] == "rsa-2"  # finds it in Redis
        assert issuer.jwks_requests == 2
        with pytest.raises(AuthenticationFailed, match="kid 'rsa-1'"):
            await second.jwk("rsa-1")  # retired everywhere
    finally:
        await one.close()
        await two.close()
        drop_redis_prefix(prefix)


async def test_a_redis_outage_falls_back_to_the_provider(issuer: LocalIssuer) -> None:
    cache = FailSafeCache(RedisCache(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2))
    try:
        keys = JwksCache(issuer=issuer.url, shared=cache)
        assert (await keys.jwk("rsa-1"))["kid"] == "rsa-1"
        assert issuer.jwks_requests == 1
    finally:
        await cache.close()
