"""The cache as a DICOMweb client sees it: QIDO-RS answers come from the cache until a
store changes them, series metadata is kept, and a dead cache changes nothing but
speed (PS3.18 10.6 and 10.4.1.1.6 answers stay exactly the same)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import ArchiveFactory, LocalArchive
from contract.test_cache_contract import REDIS_URL, dead_port, drop_prefix, require_redis
from dicomcloud.storage.keys import series_metadata_key
from integration.support import new_instance

pytestmark = pytest.mark.timeout(120)

JSON = {"Accept": "application/dicom+json"}


async def study_instances(local: LocalArchive, study: str) -> list[str]:
    response = await local.client.get(f"/dicom-web/studies/{study}/instances", headers=JSON)
    assert response.status_code == 200, response.text
    return sorted(item["00080018"]["Value"][0] for item in response.json())


async def studies(local: LocalArchive, **params: str) -> list[dict[str, Any]]:
    response = await local.client.get("/dicom-web/studies", params=params, headers=JSON)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


@pytest.fixture(params=["memory", "redis"])
async def cached(
    request: pytest.FixtureRequest, make_archive: ArchiveFactory
) -> AsyncIterator[LocalArchive]:
    if request.param == "memory":
        yield await make_archive()
        return
    require_redis()
    prefix = f"dicomcloud-test:{uuid.uuid4().hex}:"
    local = await make_archive(cache__url=REDIS_URL, cache__key_prefix=prefix)
    try:
        yield local
    finally:
        await local.close()
        await drop_prefix(prefix)


async def test_a_search_after_a_store_sees_the_store(cached: LocalArchive) -> None:
    first = new_instance()
    assert (await cached.stow([first.data])).status_code == 200
    search = cached.archive.search_cache

    assert await study_instances(cached, first.study) == [first.sop]
    assert await study_instances(cached, first.study) == [first.sop]
    hits = search.hits
    assert await study_instances(cached, first.study) == [first.sop]
    assert search.hits == hits + 1  # served from the cache

    second = new_instance(study=first.study)
    assert (await cached.stow([second.data])).status_code == 200

    assert await study_instances(cached, first.study) == sorted([first.sop, second.sop])
    found = await studies(cached, StudyInstanceUID=first.study)
    assert found[0]["00201208"]["Value"] == [2]  # NumberOfStudyRelatedInstances


async def test_cached_responses_keep_their_headers(cached: LocalArchive) -> None:
    instance = new_instance()
    await cached.stow([instance.data])
    url = f"/dicom-web/studies/{instance.study}/instances"
    xml = {"Accept": 'multipart/related; type="application/dicom+xml"'}

    answers = [await cached.client.get(url, headers=xml) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len({a.content for a in answers}) == 1
    assert len({a.headers["content-type"] for a in answers}) == 1
    assert answers[0].headers["content-type"].startswith("multipart/related")


async def test_series_metadata_is_kept_in_the_cache(cached: LocalArchive) -> None:
    instance = new_instance()
    await cached.stow([instance.data])
    url = f"/dicom-web/studies/{instance.study}/series/{instance.series}/metadata"

    first = await cached.client.get(url, headers=JSON)
    second = await cached.client.get(url, headers=JSON)

    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert first.json()[0]["00080018"]["Value"] == [instance.sop]
    # The aggregate is cached under its content address (the ETag names its version).
    etag = first.headers["etag"].removeprefix('W/"').removesuffix('"')
    key = series_metadata_key("default", instance.study, instance.series, etag)
    assert await cached.archive.cache.get(f"series-metadata:{key}") is not None


@pytest.fixture
async def dead_cache(make_archive: ArchiveFactory) -> LocalArchive:
    return await make_archive(
        cache__url=f"redis://127.0.0.1:{dead_port()}/0", cache__retry_after_seconds=0
    )


async def test_a_dead_cache_only_costs_speed(
    dead_cache: LocalArchive, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis on a port nothing listens on: every request answers as without a cache."""
    first = new_instance()
    with caplog.at_level(logging.WARNING):
        assert (await dead_cache.stow([first.data])).status_code == 200
        assert await study_instances(dead_cache, first.study) == [first.sop]
        assert await study_instances(dead_cache, first.study) == [first.sop]
        second = new_instance(study=first.study)
        assert (await dead_cache.stow([second.data])).status_code == 200
        assert await study_instances(dead_cache, first.study) == sorted([first.sop, second.sop])
        metadata = await dead_cache.client.get(
            f"/dicom-web/studies/{first.study}/series/{first.series}/metadata", headers=JSON
        )
        assert metadata.status_code == 200
        assert metadata.json()[0]["00080018"]["Value"] == [first.sop]

    assert dead_cache.archive.cache.failures > 0
    assert dead_cache.archive.search_cache.hits == 0
    assert any("cache unavailable" in r.getMessage() for r in caplog.records)


async def test_memory_cache_with_several_workers_caches_no_search(
    make_archive: ArchiveFactory,
) -> None:
    """A commit in one worker process cannot reach another's memory."""
    local = await make_archive(server__workers=2)

    assert not local.archive.search_cache.enabled
    instance = new_instance()
    await local.stow([instance.data])
    assert await study_instances(local, instance.study) == [instance.sop]
    assert await study_instances(local, instance.study) == [instance.sop]
    assert local.archive.search_cache.hits == 0
