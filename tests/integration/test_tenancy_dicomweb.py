"""Cross-tenant matrix over every DICOMweb resource: two tenants hold the same study,
series and SOP Instance UIDs with different bytes; each service (``/tenants/{t}/...``,
and ``/dicom-web`` for the default tenant) answers with its own tenant's data only,
every URI it hands out leads back to that service, and UIDs only the other tenant
holds are not found (404, or no QIDO match)."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread

from conftest import ArchiveFactory, LocalArchive
from integration.support import AS_STORED, new_dataset, part10, split_multipart
from integration.tenancy_support import (
    ALPHA,
    BETA,
    BETA_SOP,
    BETA_STUDY,
    GUESSED_INSTANCES,
    SERIES,
    SOP,
    STUDY,
    TENANCY,
    TenantData,
    load_both,
    service,
    stow_into,
)

pytestmark = pytest.mark.timeout(180)

ORIGIN = "http://testserver"
OCTET = 'multipart/related; type="application/octet-stream"'
PNG = 'image/png, multipart/related; type="image/png"'
#: Every DICOMweb service and whose data it serves: alpha is the default tenant.
SERVICES = [
    (ALPHA, service("alpha")),
    (BETA, service("beta")),
    (ALPHA, "/dicom-web"),
]


@pytest.fixture
async def both(make_archive: ArchiveFactory) -> LocalArchive:
    local = await make_archive(**TENANCY)
    await load_both(local.client)
    return local


def ok_json(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


def first(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


def retrieve_urls(items: list[dict[str, Any]]) -> set[str]:
    return {first(item, "00081190") for item in items}


def study_uids(data: TenantData) -> set[str]:
    return {STUDY, BETA_STUDY} if data is BETA else {STUDY}


def files_of_study(data: TenantData, study: str) -> set[bytes]:
    return {f for f in data.files.values() if dcmread(io.BytesIO(f)).StudyInstanceUID == study}


def direction(response: httpx.Response) -> str:
    """Whether the rendered images (one, or the parts of a multipart response) get
    brighter or darker from their top left corner."""
    assert response.status_code == 200, response.text
    content_type = response.headers["content-type"]
    if content_type.startswith("multipart/related"):
        images = [part.data for part in split_multipart(response.content, content_type)]
    else:
        images = [response.content]
    found = set()
    for data in images:
        image = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=int)
        top_left, bottom_right = image[0, 0], image[-1, -1]
        assert top_left != bottom_right
        found.add("rising" if top_left < bottom_right else "falling")
    assert len(found) == 1, found
    return found.pop()


def expected_direction(data: TenantData) -> str:
    return "rising" if data is ALPHA else "falling"


def wado_root(web: str) -> str:
    """The WADO-URI path beside a DICOMweb service."""
    return web.removesuffix("/dicom-web") + "/wado"


# --- the matrix: each check runs against every service ----------------------------------

Check = Callable[[httpx.AsyncClient, str, TenantData], Awaitable[None]]
INSTANCE = f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}"


async def qido_studies(client: httpx.AsyncClient, web: str, data: TenantData) -> None:
    items = ok_json(await client.get(f"{web}/studies", params={"includefield": "PatientID"}))
    assert {first(i, "0020000D") for i in items} == study_uids(data)
    assert {first(i, "00100020") for i in items} == {data.patient_id}
    assert retrieve_urls(items) == {f"{ORIGIN}{web}/studies/{s}" for s in study_uids(data)}


async def qido_series(client: httpx.AsyncClient, web: str, data: TenantData) -> None:
    (item,) = ok_json(await client.get(f"{web}/studies/{STUDY}/series"))
    assert first(item, "0020000E") == SERIES
    assert first(item, "00201209") == len(data.in_series())
    assert retrieve_urls([item]) == {f"{ORIGIN}{web}/studies/{STUDY}/series/{SERIES}"}
    everywhere = ok_json(await client.get(f"{web}/series"))
    assert len(everywhere) == len(study_uids(data))


async def qido_instances(client: httpx.AsyncClient, web: str, data: TenantData) -> None:
    series = f"/studies/{STUDY}/series/{SERIES}"
    items = ok_json(await client.get(f"{web}{series}/instances"))
    assert {first(i, "00080018") for i in items} == data.in_series()
    assert retrieve_urls(items) == {
        f"{ORIGIN}{web}{series}/instances/{s}" for s in data.in_series()
    }
    (one,) = ok_json(await client.get(f"{web}/instances", params={"SOPInstanceUID": SOP}))
    assert retrieve_urls([one]) == {f"{ORIGIN}{web}{INSTANCE}"}
    in_study = ok_json(await client.get(f"{web}/studies/{STUDY}/instances"))
    assert {first(i, "00080018") for i in in_study} == data.in_series()


async def wado_study(client: httpx.AsyncClient, web: str, data: TenantData) -> None:
    response = await client.get(f"{web}/studies/{STUDY}", headers=AS_STORED)
    assert response.status_code == 200, response.text
    parts = split_multipart(response.content, response.headers["content-type"])
    assert {p.data for p in parts} == files_of_study(data, STUDY)


async def wado_series(client: httpx.AsyncClient, web: str, data: TenantData) -> None:
    response = await client.get(f"{web}/studies/{STUDY}/series/{SERIES}", headers=AS_STORED)
    assert response.status_code == 200, response.text
    parts = split_multipart(response.content, response.headers["content-type"])
    assert sorted(p.data for p in parts) == sorted(data.files[s] for s in data.in_series())


async def wado_instance(client: httpx.AsyncClient, web: str, data: TenantData) -> None:
    response = await client.get(f"{web}{INSTANCE}", headers=AS_STORED)
    assert response.status_code == 200, response.text
    (part,) = split_multipart(response.content, response.headers["content-type"])
    assert part.data == data.files[SOP]


async def check_metadata(
    client: httpx.AsyncClient, web: str, data: TenantData, items: list[dict[str, Any]]
) -> None:
    """Each data set is the tenant's; its BulkDataURI leads to the tenant's pixels."""
    assert {first(i, "00100020") for i in items} == {data.patient_id}
    for item in items:
        sop = first(item, "00080018")
        uri = item["7FE00010"]["BulkDataURI"]
        assert (
            uri
            == f"{ORIGIN}{web}/studies/{STUDY}/series/{SERIES}/instances/{sop}/bulkdata/7FE00010"
        )
        bulk = await client.get(
            uri.removeprefix(ORIGIN), headers={"Accept": "application/octet-stream"}
        )
        assert bulk.status_code == 200, bulk.text
        assert bulk.content == data.pixels


async def metadata_instance(client: httpx.AsyncClient, web: str, data: TenantData) -> None:
    items = ok_json(await client.get(f"{web}{INSTANCE}/metadata"))
    assert len(items) == 1
    await check_metadata(client, web, data, items)


async def metadata_series(client: httpx.AsyncClient, web: str, data: TenantData) -> None:
    path = f"{web}/studies/{STUDY}/series/{SERIES}/metadata"
    for _ in range(2):  # built, then the stored aggregate
        items = ok_json(await client.get(path))
        assert {first(i, "00080018") for i in items} == data.in_series()
        await check_metadata(client, web, data, items)


async def metadata_study(client: httpx.AsyncClient, web: str, data: TenantData) -> None:
    items = ok_json(await client.get(f"{web}/studies/{STUDY}/metadata"))
    assert {first(i, "00080018") for i in items} == data.in_series()
    await check_metadata(client, web, data, items)


async def bulkdata_multipart(client: httpx.AsyncClient, web: str, data: TenantData) -> None:
    response = await client.get(f"{web}{INSTANCE}/bulkdata/7FE00010", headers={"Accept": OCTET})
    assert response.status_code == 200, response.text
    (part,) = split_multipart(response.content, response.headers["content-type"])
    assert part.data == data.pixels


async def frames(client: httpx.AsyncClient, web: str, data: TenantData) -> None:
    response = await client.get(f"{web}{INSTANCE}/frames/1", headers={"Accept": OCTET})
    assert response.status_code == 200, response.text
    (part,) = split_multipart(response.content, response.headers["content-type"])
    assert part.data == data.pixels


async def rendered_and_thumbnails(client: httpx.AsyncClient, web: str, data: TenantData) -> None:
    series = f"/studies/{STUDY}/series/{SERIES}"
    for resource in (f"/studies/{STUDY}", series, INSTANCE, f"{INSTANCE}/frames/1"):
        for kind in ("rendered", "thumbnail"):
            response = await client.get(f"{web}{resource}/{kind}", headers={"Accept": PNG})
            assert direction(response) == expected_direction(data), (resource, kind)


async def wado_uri(client: httpx.AsyncClient, web: str, data: TenantData) -> None:
    params = {"requestType": "WADO", "studyUID": STUDY, "seriesUID": SERIES, "objectUID": SOP}
    for root in (wado_root(web), f"{web}/wado"):
        response = await client.get(root, params={**params, "contentType": "application/dicom"})
        assert response.status_code == 200, response.text
        ds = dcmread(io.BytesIO(response.content))
        assert ds.PatientID == data.patient_id
        assert ds.PixelData == data.pixels
        image = await client.get(root, params={**params, "contentType": "image/png"})
        assert direction(image) == expected_direction(data)


CHECKS: list[Check] = [
    qido_studies,
    qido_series,
    qido_instances,
    wado_study,
    wado_series,
    wado_instance,
    metadata_instance,
    metadata_series,
    metadata_study,
    bulkdata_multipart,
    frames,
    rendered_and_thumbnails,
    wado_uri,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_each_service_answers_with_its_own_tenants_data(
    both: LocalArchive, check: Check
) -> None:
    for data, web in SERVICES:
        await check(both.client, web, data)


# --- guessed UIDs ------------------------------------------------------------------------


def guessed_paths() -> list[str]:
    """Every resource path naming a UID only beta holds."""
    paths = []
    for study, series, sop in GUESSED_INSTANCES:
        instance = f"/studies/{study}/series/{series}/instances/{sop}"
        paths += [
            instance,
            f"{instance}/metadata",
            f"{instance}/bulkdata/7FE00010",
            f"{instance}/frames/1",
            f"{instance}/rendered",
            f"{instance}/thumbnail",
            f"{instance}/frames/1/rendered",
            f"{instance}/frames/1/thumbnail",
        ]
        if study != STUDY:
            for below in (f"/studies/{study}", f"/studies/{study}/series/{series}"):
                paths += [below, f"{below}/metadata", f"{below}/rendered", f"{below}/thumbnail"]
    return paths


@pytest.mark.parametrize("web", [service("alpha"), "/dicom-web"])
async def test_uids_only_the_other_tenant_holds_are_not_found(both: LocalArchive, web: str) -> None:
    client = both.client
    for path in guessed_paths():
        response = await client.get(f"{web}{path}", headers={"Accept": "*/*"})
        assert response.status_code == 404, (path, response.status_code, response.text[:200])
    for study, series, sop in GUESSED_INSTANCES:
        params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
        for root in (wado_root(web), f"{web}/wado"):
            for content_type in ("application/dicom", "image/jpeg"):
                response = await client.get(root, params={**params, "contentType": content_type})
                assert response.status_code == 404, (root, content_type, response.text)
    searches = [
        ("/studies", {"StudyInstanceUID": BETA_STUDY}),
        (f"/studies/{BETA_STUDY}/series", {}),
        (f"/studies/{BETA_STUDY}/instances", {}),
        ("/series", {"StudyInstanceUID": BETA_STUDY}),
        ("/instances", {"SOPInstanceUID": BETA_SOP}),
        (f"/studies/{STUDY}/series/{SERIES}/instances", {"SOPInstanceUID": BETA_SOP}),
        ("/studies", {"PatientID": BETA.patient_id}),
    ]
    for path, params in searches:
        assert ok_json(await client.get(f"{web}{path}", params=params)) == [], path


# --- STOW-RS into one tenant ----------------------------------------------------------------


async def test_stow_stores_into_the_services_tenant_only(both: LocalArchive) -> None:
    ds = new_dataset(study=STUDY, series=SERIES, patient_id="PAT-beta")
    data = part10(ds)
    web = service("beta")
    response = await stow_into(both.client, web, [data], study=STUDY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["00081190"]["Value"] == [f"{ORIGIN}{web}/studies/{STUDY}"]
    (item,) = body["00081199"]["Value"]
    path = f"/studies/{STUDY}/series/{SERIES}/instances/{ds.SOPInstanceUID}"
    assert item["00081190"]["Value"] == [f"{ORIGIN}{web}{path}"]

    stored = await both.client.get(f"{web}{path}", headers=AS_STORED)
    (part,) = split_multipart(stored.content, stored.headers["content-type"])
    assert part.data == data
    for other in (service("alpha"), "/dicom-web"):
        assert (await both.client.get(f"{other}{path}", headers=AS_STORED)).status_code == 404
        found = ok_json(
            await both.client.get(
                f"{other}/instances", params={"SOPInstanceUID": ds.SOPInstanceUID}
            )
        )
        assert found == []
    # The study alpha shares by UID is unchanged there.
    await wado_study(both.client, service("alpha"), ALPHA)


async def test_stow_to_a_study_path_checks_the_tenant_first(both: LocalArchive) -> None:
    data = part10(new_dataset(study=STUDY))
    response = await stow_into(both.client, "/tenants/nobody/dicom-web", [data], study=STUDY)
    assert response.status_code == 404, response.text
    assert "nobody" in response.json()["error"]


# --- which tenants are served -------------------------------------------------------------

TENANT_ROUTES = [
    ("GET", "/studies"),
    ("GET", "/series"),
    ("GET", "/instances"),
    ("GET", f"/studies/{STUDY}"),
    ("GET", f"/studies/{STUDY}/metadata"),
    ("GET", f"/studies/{STUDY}/rendered"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/thumbnail"),
    ("GET", f"{INSTANCE}/frames/1"),
    ("GET", f"{INSTANCE}/bulkdata/7FE00010"),
    ("GET", "/wado"),
    ("POST", "/studies"),
    ("POST", f"/studies/{STUDY}"),
]


@pytest.mark.parametrize(("method", "path"), TENANT_ROUTES)
async def test_a_tenant_off_the_allow_list_is_not_found(
    both: LocalArchive, method: str, path: str
) -> None:
    response = await both.client.request(method, f"/tenants/gamma/dicom-web{path}")
    assert response.status_code == 404, response.text
    assert "tenant 'gamma' is not served here" in response.json()["error"]


@pytest.mark.parametrize("tenant", ["-leading-dash", "a.b", "x" * 65, "caf%C3%A9"])
async def test_a_malformed_tenant_is_a_bad_request(both: LocalArchive, tenant: str) -> None:
    for method, path in TENANT_ROUTES:
        response = await both.client.request(method, f"/tenants/{tenant}/dicom-web{path}")
        assert response.status_code == 400, (method, path, response.text)
        assert "tenant id" in response.json()["error"]
    wado = await both.client.get(f"/tenants/{tenant}/wado")
    assert wado.status_code == 400, wado.text


async def test_without_an_allow_list_any_tenant_id_is_served(make_archive: ArchiveFactory) -> None:
    local = await make_archive()
    web = service("newcomer")
    assert ok_json(await local.client.get(f"{web}/studies")) == []
    data = part10(new_dataset())
    assert (await stow_into(local.client, web, [data])).status_code == 200
    assert len(ok_json(await local.client.get(f"{web}/studies"))) == 1
    assert ok_json(await local.client.get("/dicom-web/studies")) == []  # default tenant


# --- precomputed metadata keeps each tenant's URIs ------------------------------------------


async def test_precomputed_series_metadata_carries_each_tenants_base_url(
    make_archive: ArchiveFactory,
) -> None:
    """With ``server.base_url`` the worker prepares every tenant's series aggregate for
    that tenant's own service URL; what is served from it points back there."""
    local = await make_archive(**TENANCY, server__base_url="https://pacs.example/")
    await load_both(local.client)
    worker = local.archive.metadata_worker
    assert worker is not None
    async with asyncio.timeout(60):
        while worker.processed < 4:  # noqa: ASYNC110 - the relay publishes after a linger
            await asyncio.sleep(0.05)
        await worker.settled()
    aggregates = sorted(local.data_dir.glob("metadata/*/*/*/series.*.json.gz"))
    by_tenant: dict[str, list[str]] = {}
    for aggregate in aggregates:
        tenant = aggregate.relative_to(local.data_dir / "metadata").parts[0]
        items = json.loads(gzip.decompress(aggregate.read_bytes()))
        by_tenant.setdefault(tenant, []).extend(i["7FE00010"]["BulkDataURI"] for i in items)
    for tenant, uris in by_tenant.items():
        mine = [f"https://pacs.example{service(tenant)}/"]
        if tenant == "alpha":
            mine.append("https://pacs.example/dicom-web/")
        assert uris and all(uri.startswith(tuple(mine)) for uri in uris), (tenant, uris)
    assert {"alpha", "beta"} <= by_tenant.keys()

    for data, web in SERVICES:
        items = ok_json(await local.client.get(f"{web}/studies/{STUDY}/series/{SERIES}/metadata"))
        for item in items:
            assert item["7FE00010"]["BulkDataURI"].startswith(f"https://pacs.example{web}/studies/")
        assert {first(i, "00100020") for i in items} == {data.patient_id}


async def test_the_same_uids_in_two_tenants_do_not_collide_on_replacement(
    make_archive: ArchiveFactory,
) -> None:
    """With duplicate policy "replace", replacing beta's instance leaves alpha's as it
    was (both keep the same UIDs)."""
    local = await make_archive(**TENANCY, ingest__duplicate_policy="replace")
    await load_both(local.client)
    ds = dcmread(io.BytesIO(BETA.files[SOP]))
    ds.PatientName = "beta^Replaced"
    replacement = part10(ds)
    response = await stow_into(local.client, service("beta"), [replacement])
    assert response.status_code == 200, response.text
    got = await local.client.get(f"{service('beta')}{INSTANCE}", headers=AS_STORED)
    assert split_multipart(got.content, got.headers["content-type"])[0].data == replacement
    await wado_instance(local.client, service("alpha"), ALPHA)
    await metadata_instance(local.client, service("alpha"), ALPHA)
