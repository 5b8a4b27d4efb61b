"""Search: the one query engine behind QIDO-RS (PS3.18 10.6) and, later, C-FIND (PS3.4
C.4.1).  Transports parse their requests into a ``Query`` with the key tables here and
call the service; the index does the matching."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from dicomcloud.domain.query import Query, QueryLevel
from dicomcloud.domain.results import MODALITIES_IN_STUDY, STUDY_FIELDS, StudyResult
from dicomcloud.ports import Index

__all__ = ["STUDY_SEARCH_KEYS", "QueryService"]

#: Study-level matching keys and their VRs (PS3.18 table 10.6.1-5 "Study" and table
#: 10.6.3-3; PS3.4 C.6.1.1.2 and C.6.1.1.3): the stored ones plus ModalitiesInStudy.
STUDY_SEARCH_KEYS: Final[Mapping[str, str]] = {
    **{keyword: ref.vr for keyword, ref in STUDY_FIELDS.items()},
    MODALITIES_IN_STUDY: "CS",
}


class QueryService:
    """Searches of the index, per tenant."""

    def __init__(self, index: Index) -> None:
        self._index = index

    async def search_studies(self, tenant_id: str, query: Query) -> list[StudyResult]:
        """The studies of ``tenant_id`` matching ``query`` (a STUDY-level query)."""
        if query.level is not QueryLevel.STUDY:
            raise ValueError(f"a {query.level.value}-level query is not a study search")
        return await self._index.search_studies(tenant_id, query)
