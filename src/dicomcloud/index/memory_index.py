"""The in-memory reference implementation of the Index port.

Same observable behaviour as ``SqlIndex`` (the contract tests run both); used by fast
unit tests and as the executable statement of the semantics.  Nothing survives the
process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

from dicomcloud.domain.events import INSTANCE_STORED, StoredEvent
from dicomcloud.domain.records import (
    DuplicatePolicy,
    ExtractedInstance,
    InstanceRecord,
    PatientRecord,
    SeriesRecord,
    StoreOutcome,
    StudyRecord,
)
from dicomcloud.errors import IdentityConflict, IndexUnavailable
from dicomcloud.index.sql_index import ordered
from dicomcloud.ports import InstanceWrite, OutboxMessage

T = TypeVar("T")
_Key = tuple[str, str]


def _merge(old: T | None, new: T) -> T:
    """``new`` over ``old``, keeping old values where the new one is absent (None, or an
    empty PatientID)."""
    if old is None:
        return new
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(new):  # type: ignore[arg-type]
        value = getattr(new, field.name)
        if value is None or (field.name == "patient_id" and value == ""):
            continue
        changes[field.name] = value
    return dataclasses.replace(old, **changes)  # type: ignore[type-var]


class MemoryIndex:
    """``dicomcloud.ports.Index`` in process memory."""

    def __init__(self) -> None:
        self._patients: dict[_Key, PatientRecord] = {}
        self._studies: dict[_Key, StudyRecord] = {}
        self._series: dict[_Key, SeriesRecord] = {}
        self._instances: dict[_Key, InstanceRecord] = {}
        self._outbox: dict[int, OutboxMessage] = {}
        self._next_id = 1
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise IndexUnavailable("the in-memory index is closed")

    async def migrate(self) -> None:
        """Nothing to do; present so callers can treat every index alike."""

    async def store_instances(self, writes: Sequence[InstanceWrite]) -> list[StoreOutcome]:
        # No await below: the whole batch is applied atomically within the event loop.
        self._check_open()
        outcomes: list[StoreOutcome] = []
        effective: list[tuple[ExtractedInstance, StoredEvent]] = []
        seen = set(self._instances)
        for write in writes:
            record = write.extracted.instance
            key = (record.tenant_id, record.sop_instance_uid)
            if key in seen:
                if write.policy is DuplicatePolicy.KEEP_FIRST:
                    outcomes.append(StoreOutcome.DUPLICATE)
                    continue
                outcomes.append(StoreOutcome.REPLACED)
            else:
                outcomes.append(StoreOutcome.STORED)
                seen.add(key)
            replaced = outcomes[-1] is StoreOutcome.REPLACED
            event = write.event
            if event.replaced != replaced:
                event = dataclasses.replace(event, replaced=replaced)
            effective.append((write.extracted, event))

        parents: dict[_Key, str] = {k: s.study_instance_uid for k, s in self._series.items()}
        for extracted, _ in effective:
            series = extracted.series
            key = (series.tenant_id, series.series_instance_uid)
            parent = parents.setdefault(key, series.study_instance_uid)
            if parent != series.study_instance_uid:
                raise IdentityConflict(
                    f"series {series.series_instance_uid} belongs to study {parent}, "
                    f"not to study {series.study_instance_uid}"
                )

        for extracted, event in effective:
            p, st, se, inst = (
                extracted.patient,
                extracted.study,
                extracted.series,
                extracted.instance,
            )
            key = (p.tenant_id, p.patient_id)
            self._patients[key] = _merge(self._patients.get(key), p)
            key = (st.tenant_id, st.study_instance_uid)
            self._studies[key] = _merge(self._studies.get(key), st)
            key = (se.tenant_id, se.series_instance_uid)
            old_series = self._series.get(key)
            if old_series is not None:
                se = dataclasses.replace(se, study_instance_uid=old_series.study_instance_uid)
            self._series[key] = _merge(old_series, se)
            self._instances[(inst.tenant_id, inst.sop_instance_uid)] = inst
            message = OutboxMessage(self._next_id, INSTANCE_STORED, event.key, event.to_json())
            self._outbox[self._next_id] = message
            self._next_id += 1
        return outcomes

    async def get_instance(self, tenant_id: str, sop_instance_uid: str) -> InstanceRecord | None:
        self._check_open()
        return self._instances.get((tenant_id, sop_instance_uid))

    async def list_instances(
        self,
        tenant_id: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
    ) -> list[InstanceRecord]:
        """The instances of a study (or of one of its series), in series and
        InstanceNumber order."""
        self._check_open()
        return ordered(
            r
            for (tenant, _), r in self._instances.items()
            if tenant == tenant_id
            and r.study_instance_uid == study_instance_uid
            and (series_instance_uid is None or r.series_instance_uid == series_instance_uid)
        )

    async def count_instances(self, tenant_id: str) -> int:
        """How many instances the tenant has."""
        self._check_open()
        return sum(1 for tenant, _ in self._instances if tenant == tenant_id)

    async def fetch_outbox(self, limit: int) -> list[OutboxMessage]:
        self._check_open()
        return [self._outbox[i] for i in sorted(self._outbox)[: max(limit, 0)]]

    async def mark_published(self, ids: Sequence[int]) -> None:
        self._check_open()
        for message_id in ids:
            self._outbox.pop(message_id, None)

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self._closed = True
