"""S3 unreachable: the sender is told Out of resources (PS3.4 B.2.3 0xA700), nothing
is indexed, and readiness says why."""

from __future__ import annotations

import pytest

from conftest import ArchiveFactory
from contract.test_cache_contract import dead_port
from integration.support import failed_items, failure_reasons, new_instance

pytestmark = pytest.mark.timeout(120)


async def test_stow_to_an_unreachable_s3_fails_with_out_of_resources(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(
        storage__url=f"s3://bucket/p?endpoint_url=http://127.0.0.1:{dead_port()}&region=x",
        storage__s3_access_key_id="a",
        storage__s3_secret_access_key="b",
        storage__s3_max_retries=1,
        storage__s3_retry_timeout=5,
    )
    instance = new_instance()

    response = await local.stow([instance.data])

    assert response.status_code == 409, response.text
    payload = response.json()
    assert len(failed_items(payload)) == 1
    assert failure_reasons(payload) == [0xA700]
    assert not await local.indexed(instance.sop)
    ready = await local.client.get("/readyz")
    assert ready.status_code == 503
    assert "storage" in ready.text
