"""The in-memory reference AccessLogStore (unit tests, and the semantics the SQL store
is checked against)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from dicomcloud.domain.access import AccessQuery, AccessRecord, matches


class MemoryAccessLog:
    """``dicomcloud.ports.AccessLogStore`` in a dict (lost when the process ends)."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], AccessRecord] = {}

    async def append(self, records: Sequence[AccessRecord]) -> None:
        for record in records:
            self._records.setdefault((record.tenant_id, record.event_id), record.clipped())

    async def search(self, query: AccessQuery) -> list[AccessRecord]:
        found = sorted(
            (r for r in self._records.values() if matches(r, query)),
            key=lambda r: (r.time, r.event_id),
            reverse=query.newest_first,
        )
        return found[query.offset : query.offset + query.limit]

    async def purge(self, before: datetime) -> int:
        old = [key for key, record in self._records.items() if record.time < before]
        for key in old:
            del self._records[key]
        return len(old)
