"""The in-memory reference DerivedCopyStore (unit tests, an in-memory index, and the
semantics the SQL store is checked against)."""

from __future__ import annotations

from dataclasses import replace

from dicomcloud.domain.derived import DerivedCopy, TranscodeFailure

_Key = tuple[str, str, str]


class MemoryDerivedCopies:
    """``dicomcloud.ports.DerivedCopyStore`` in dicts (lost when the process ends)."""

    def __init__(self) -> None:
        self._copies: dict[_Key, DerivedCopy] = {}
        self._failures: dict[_Key, TranscodeFailure] = {}

    async def record_copy(self, copy: DerivedCopy) -> DerivedCopy | None:
        key = (copy.tenant_id, copy.sop_instance_uid, copy.transfer_syntax_uid)
        previous = self._copies.get(key)
        self._copies[key] = copy
        self._failures.pop(key, None)
        return previous

    async def get_copy(
        self, tenant_id: str, sop_instance_uid: str, transfer_syntax_uid: str
    ) -> DerivedCopy | None:
        return self._copies.get((tenant_id, sop_instance_uid, transfer_syntax_uid))

    async def list_copies(self, tenant_id: str, sop_instance_uid: str) -> list[DerivedCopy]:
        found = [
            c
            for (tenant, sop, _), c in self._copies.items()
            if (tenant, sop) == (tenant_id, sop_instance_uid)
        ]
        return sorted(found, key=lambda c: c.transfer_syntax_uid)

    async def record_failure(self, failure: TranscodeFailure) -> TranscodeFailure:
        key = (failure.tenant_id, failure.sop_instance_uid, failure.transfer_syntax_uid)
        earlier = self._failures.get(key)
        attempts = 1
        if earlier is not None and earlier.source_version == failure.source_version:
            attempts = earlier.attempts + 1
        kept = replace(failure.clipped(), attempts=attempts)
        self._failures[key] = kept
        return kept

    async def get_failure(
        self, tenant_id: str, sop_instance_uid: str, transfer_syntax_uid: str
    ) -> TranscodeFailure | None:
        return self._failures.get((tenant_id, sop_instance_uid, transfer_syntax_uid))

    async def delete_copy(self, copy: DerivedCopy) -> bool:
        key = (copy.tenant_id, copy.sop_instance_uid, copy.transfer_syntax_uid)
        kept = self._copies.get(key)
        if kept is None or kept.blob_key != copy.blob_key:
            return False
        del self._copies[key]
        return True

    async def forget(self, tenant_id: str, sop_instance_uid: str) -> list[DerivedCopy]:
        removed = await self.list_copies(tenant_id, sop_instance_uid)
        for key in [k for k in self._copies if k[:2] == (tenant_id, sop_instance_uid)]:
            del self._copies[key]
        for key in [k for k in self._failures if k[:2] == (tenant_id, sop_instance_uid)]:
            del self._failures[key]
        return removed
