"""``dicomcloud serve`` on PostgreSQL, chosen as a user would: DICOMCLOUD_INDEX__URL.

storescu and STOW-RS in, WADO-RS out, and the rows are in PostgreSQL (not in a
SQLite file next to the data).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import backends
from conftest import RealServer, require_tool, running_server
from dicomcloud.index.engine import async_url
from integration.support import (
    AS_STORED,
    dataset_bytes,
    multipart_related,
    new_instance,
    split_multipart,
)

pytestmark = [pytest.mark.interop, pytest.mark.backend, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def postgresql_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    runner = asyncio.Runner()
    database = backends.database_url("postgresql", tmp_path_factory.mktemp("pg"))
    try:
        url = runner.run(database.__aenter__())
        try:
            yield url
        finally:
            runner.run(database.__aexit__(None, None, None))
    finally:
        runner.close()


@pytest.fixture(scope="module")
def pg_server(
    postgresql_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealServer]:
    env = {"DICOMCLOUD_INDEX__URL": postgresql_url}
    with running_server(tmp_path_factory.mktemp("pg-server") / "data", env) as running:
        yield running


async def _count_instances(url: str) -> int:
    engine = create_async_engine(async_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(sa.text("SELECT count(*) FROM instance"))).scalar_one())
    finally:
        await engine.dispose()


def test_storescu_and_stow_land_in_postgresql(
    pg_server: RealServer, postgresql_url: str, tmp_path: Path
) -> None:
    storescu = require_tool("storescu")
    by_dimse = [new_instance() for _ in range(5)]
    by_stow = [new_instance() for _ in range(5)]
    for number, instance in enumerate(by_dimse):
        (tmp_path / f"{number}.dcm").write_bytes(instance.data)

    result = subprocess.run(
        [
            storescu,
            "-aec",
            pg_server.ae_title,
            "+sd",
            "127.0.0.1",
            str(pg_server.dicom_port),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TCP_NODELAY": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    body, content_type = multipart_related([i.data for i in by_stow])
    with httpx.Client(base_url=pg_server.dicomweb_url, timeout=60) as http:
        stow = http.post("/studies", content=body, headers={"Content-Type": content_type})
        assert stow.status_code == 200, stow.text

        for instance in by_dimse + by_stow:
            response = http.get(instance.path, headers=AS_STORED)
            assert response.status_code == 200, response.text
            (part,) = split_multipart(response.content, response.headers["content-type"])
            assert dataset_bytes(part.data) == dataset_bytes(instance.data)
            if instance in by_stow:
                assert part.data == instance.data

    assert asyncio.run(_count_instances(postgresql_url)) == 10
    assert not (pg_server.data_dir / "index.sqlite3").exists()
