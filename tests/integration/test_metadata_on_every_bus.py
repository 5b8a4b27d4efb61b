"""The series metadata builder is consumer group ``metadata`` on every bus: with
memory://, redis:// and kafka:// alike, stored instances reach it through the outbox
and the bus, and the series aggregate it prepares is what WADO-RS serves."""

from __future__ import annotations

import asyncio
import gzip
import json

import pytest
from pydicom.uid import generate_uid

from buses import KINDS, bus_url, drop_redis_prefix, require_redis, unique_prefix
from conftest import ArchiveFactory
from integration.support import new_dataset, part10

pytestmark = pytest.mark.backend


@pytest.mark.parametrize("kind", KINDS)
async def test_stored_series_metadata_is_prepared_through_the_bus(
    kind: str, make_archive: ArchiveFactory, request: pytest.FixtureRequest
) -> None:
    prefix = unique_prefix()
    tansu_address = None
    if kind == "redis":
        require_redis()
    if kind == "kafka":
        tansu_address = request.getfixturevalue("tansu")
    try:
        local = await make_archive(
            events__url=bus_url(kind, prefix, tansu_address),
            server__base_url="http://testserver",
            metadata__quiet_seconds=0.2,
        )
        worker = local.archive.metadata_worker
        assert worker is not None
        study, series = generate_uid(), generate_uid()
        files, sops = [], []
        for number in (1, 2):
            ds = new_dataset(study=study, series=series, pixels=2048)
            ds.InstanceNumber = number
            files.append(part10(ds))
            sops.append(str(ds.SOPInstanceUID))

        assert (await local.stow(files)).status_code == 200
        async with asyncio.timeout(120):
            while worker.processed < 2:  # noqa: ASYNC110 - consumed through the bus
                await asyncio.sleep(0.05)
            await worker.settled()
        (aggregate,) = (local.data_dir / "metadata").rglob("series.*.json.gz")
        response = await local.retrieve(f"/studies/{study}/series/{series}/metadata")

        assert response.status_code == 200, response.text
        assert response.json() == json.loads(gzip.decompress(aggregate.read_bytes()))
        assert [i["00080018"]["Value"][0] for i in response.json()] == sops
        assert local.archive.metadata.series_built == 1  # the read built nothing
        await local.close()
    finally:
        if kind == "redis":
            drop_redis_prefix(prefix)
