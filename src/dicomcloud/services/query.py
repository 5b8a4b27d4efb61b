"""Search: the one query engine behind QIDO-RS (PS3.18 10.6) and C-FIND (PS3.4 C.4.1).

Transports parse their requests into a ``Query`` with the key tables here and call the
service; the index does the matching."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from dicomcloud.domain.query import Query, QueryLevel
from dicomcloud.domain.results import (
    LEVEL_FIELDS,
    MODALITIES_IN_STUDY,
    InstanceResult,
    PatientResult,
    SearchResult,
    SeriesResult,
    StudyResult,
)
from dicomcloud.ports import Index

__all__ = [
    "INSTANCE_SEARCH_KEYS",
    "PATIENT_SEARCH_KEYS",
    "SEARCH_KEYS",
    "SERIES_SEARCH_KEYS",
    "STUDY_SEARCH_KEYS",
    "QueryService",
]

#: Patient-level matching keys and their VRs (PS3.4 C.6.1.1.2; C-FIND Patient Root).
PATIENT_SEARCH_KEYS: Final[Mapping[str, str]] = {
    keyword: ref.vr for keyword, ref in LEVEL_FIELDS[QueryLevel.PATIENT].items()
}
#: Study-level matching keys and their VRs (PS3.18 table 10.6.1-5 "Study" and table
#: 10.6.3-3; PS3.4 C.6.1.1.2 and C.6.1.1.3): the stored ones plus ModalitiesInStudy.
STUDY_SEARCH_KEYS: Final[Mapping[str, str]] = {
    **{keyword: ref.vr for keyword, ref in LEVEL_FIELDS[QueryLevel.STUDY].items()},
    MODALITIES_IN_STUDY: "CS",
}
#: Series-level matching keys (PS3.18 table 10.6.3-4), with the study-level stored keys.
SERIES_SEARCH_KEYS: Final[Mapping[str, str]] = {
    keyword: ref.vr for keyword, ref in LEVEL_FIELDS[QueryLevel.SERIES].items()
}
#: Instance-level matching keys (PS3.18 table 10.6.3-5), with the study and series keys.
INSTANCE_SEARCH_KEYS: Final[Mapping[str, str]] = {
    keyword: ref.vr for keyword, ref in LEVEL_FIELDS[QueryLevel.IMAGE].items()
}
#: The matching keys of each level.
SEARCH_KEYS: Final[Mapping[QueryLevel, Mapping[str, str]]] = {
    QueryLevel.PATIENT: PATIENT_SEARCH_KEYS,
    QueryLevel.STUDY: STUDY_SEARCH_KEYS,
    QueryLevel.SERIES: SERIES_SEARCH_KEYS,
    QueryLevel.IMAGE: INSTANCE_SEARCH_KEYS,
}


class QueryService:
    """Searches of the index, per tenant."""

    def __init__(self, index: Index) -> None:
        self._index = index

    async def search(self, tenant_id: str, query: Query) -> Sequence[SearchResult]:
        """The results of ``query`` at its level (PATIENT, STUDY, SERIES or IMAGE)."""
        if query.level is QueryLevel.PATIENT:
            return await self.search_patients(tenant_id, query)
        if query.level is QueryLevel.STUDY:
            return await self.search_studies(tenant_id, query)
        if query.level is QueryLevel.SERIES:
            return await self.search_series(tenant_id, query)
        return await self.search_instances(tenant_id, query)

    async def search_patients(self, tenant_id: str, query: Query) -> list[PatientResult]:
        """The patients of ``tenant_id`` matching ``query`` (a PATIENT-level query)."""
        _check_level(query, QueryLevel.PATIENT)
        return await self._index.search_patients(tenant_id, query)

    async def search_studies(self, tenant_id: str, query: Query) -> list[StudyResult]:
        """The studies of ``tenant_id`` matching ``query`` (a STUDY-level query)."""
        _check_level(query, QueryLevel.STUDY)
        return await self._index.search_studies(tenant_id, query)

    async def search_series(self, tenant_id: str, query: Query) -> list[SeriesResult]:
        """The series of ``tenant_id`` matching ``query`` (a SERIES-level query)."""
        _check_level(query, QueryLevel.SERIES)
        return await self._index.search_series(tenant_id, query)

    async def search_instances(self, tenant_id: str, query: Query) -> list[InstanceResult]:
        """The instances of ``tenant_id`` matching ``query`` (an IMAGE-level query)."""
        _check_level(query, QueryLevel.IMAGE)
        return await self._index.search_instances(tenant_id, query)


def _check_level(query: Query, level: QueryLevel) -> None:
    if query.level is not level:
        raise ValueError(f"a {query.level.value}-level query is not a {level.value} search")
