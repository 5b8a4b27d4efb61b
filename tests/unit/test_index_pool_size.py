"""``index.pool_size`` reaches the connection pool of a server database."""

from __future__ import annotations

from pathlib import Path

import backends
from dicomcloud.app import Archive
from dicomcloud.config import load_settings
from dicomcloud.index.sql_index import SqlIndex


async def test_pool_size_setting_reaches_the_pool(tmp_path: Path) -> None:
    async with backends.database_url("postgresql", tmp_path) as url:
        settings = load_settings(data_dir=tmp_path / "data", index__url=url, index__pool_size=3)
        archive = await Archive.open(settings)
        try:
            await archive.index.ping()
            assert isinstance(archive.index, SqlIndex)
            assert archive.index.engine.sync_engine.pool.size() == 3  # type: ignore[attr-defined]
        finally:
            await archive.stop()
