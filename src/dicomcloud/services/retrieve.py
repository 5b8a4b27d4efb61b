"""Retrieve use-case shared by WADO-RS and (later) C-GET / C-MOVE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from dicomcloud.domain.records import InstanceRecord
from dicomcloud.errors import NotFound
from dicomcloud.ports import BlobStore, Index


@dataclass(frozen=True, slots=True)
class StoredInstance:
    record: InstanceRecord
    chunks: AsyncIterator[bytes]


class RetrieveService:
    def __init__(self, index: Index, blobs: BlobStore) -> None:
        self.index = index
        self.blobs = blobs

    async def instance(
        self, tenant_id: str, study_uid: str, series_uid: str, sop_uid: str
    ) -> StoredInstance:
        """The stored Part-10 bytes of one instance (PS3.18 10.4.1.1.3 target)."""
        record = await self.index.get_instance(tenant_id, sop_uid)
        if (
            record is None
            or record.study_instance_uid != study_uid
            or record.series_instance_uid != series_uid
        ):
            raise NotFound(
                f"instance {sop_uid} of series {series_uid} in study {study_uid} not found"
            )
        if not await self.blobs.exists(record.blob_key):
            raise NotFound(f"the stored object of instance {sop_uid} is missing")
        return StoredInstance(record, self.blobs.stream(record.blob_key))
