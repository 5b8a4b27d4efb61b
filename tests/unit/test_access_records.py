"""Access records: actions of DICOMweb routes, outcomes, redaction, the sink's queue."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from dicomcloud.dicomweb.access_log import action_of
from dicomcloud.domain.access import (
    AccessQuery,
    AccessRecord,
    outcome_of_dimse,
    outcome_of_http,
    redact_query,
)
from dicomcloud.domain.events import uuid7
from dicomcloud.events.memory import MemoryEventBus
from dicomcloud.index.memory_access_log import MemoryAccessLog
from dicomcloud.services.access_log import AccessLogSink

W = "/dicom-web"
STUDY = f"{W}/studies/{{study}}"
SERIES = f"{STUDY}/series/{{series}}"
INSTANCE = f"{SERIES}/instances/{{sop}}"


@pytest.mark.parametrize(
    ("method", "template", "action"),
    [
        ("POST", f"{W}/studies", "STOW-RS store"),
        ("POST", STUDY, "STOW-RS store"),
        ("GET", f"{W}/studies", "QIDO-RS search"),
        ("GET", f"{STUDY}/series", "QIDO-RS search"),
        ("GET", f"{SERIES}/instances", "QIDO-RS search"),
        ("GET", f"{W}/instances", "QIDO-RS search"),
        ("GET", STUDY, "WADO-RS retrieve"),
        ("GET", SERIES, "WADO-RS retrieve"),
        ("GET", INSTANCE, "WADO-RS retrieve"),
        ("GET", f"{SERIES}/metadata", "WADO-RS metadata"),
        ("GET", f"{INSTANCE}/frames/{{frames}}", "WADO-RS frames"),
        ("GET", f"{INSTANCE}/frames/{{frames}}/rendered", "WADO-RS rendered"),
        ("GET", f"{STUDY}/thumbnail", "WADO-RS thumbnail"),
        ("GET", f"{INSTANCE}/bulkdata/{{path}}", "WADO-RS bulkdata"),
        ("GET", "/wado", "WADO-URI"),
        ("GET", f"{W}/wado", "WADO-URI"),
        ("GET", "/admin/access-log", "access-log query"),
        ("GET", None, "HTTP request"),
    ],
)
def test_action_of_each_route(method: str, template: str | None, action: str) -> None:
    assert action_of(method, template) == action


def test_outcomes() -> None:
    assert [outcome_of_http(s) for s in (200, 204, 206, 304, 202, 400, 404, 500, 0)] == [
        "success",
        "success",
        "success",
        "success",
        "warning",
        "failure",
        "failure",
        "failure",
        "failure",
    ]
    assert [outcome_of_dimse(s) for s in (0, 0xFF00, 0xB000, 0x0001, 0xFE00, 0xA700, 0xC000)] == [
        "success",
        "success",
        "warning",
        "warning",
        "cancel",
        "failure",
        "failure",
    ]


def test_credential_parameters_are_redacted() -> None:
    assert redact_query("PatientID=12&access_token=abc&API_KEY=k&limit=5") == (
        "PatientID=12&access_token=***&API_KEY=***&limit=5"
    )
    assert redact_query("") == ""
    assert redact_query("PatientName=Doe*") == "PatientName=Doe*"


def _record(n: int) -> AccessRecord:
    return AccessRecord(
        event_id=str(uuid7()),
        time=datetime.now(UTC),
        node_id="n",
        protocol="DICOMweb",
        action="QIDO-RS search",
        tenant_id="t",
        principal=f"user{n}",
        peer=None,
        status=200,
        outcome="success",
        duration_ms=0.1,
    )


class GatedStore(MemoryAccessLog):
    """The reference store, holding every append until the gate opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.batches: list[int] = []

    async def append(self, records: Sequence[AccessRecord]) -> None:
        await self.gate.wait()
        self.batches.append(len(records))
        await super().append(records)


async def test_a_full_queue_waits_then_drops_and_counts() -> None:
    store = GatedStore()
    sink = AccessLogSink(store, None, queue_size=2, block_seconds=0.05, batch=1, linger_seconds=0)
    await sink.start()
    for n in range(3):  # one in the writer's hands (waiting for the store), two queued
        await sink.put(_record(n))

    await sink.put(_record(3))  # no room within block_seconds

    assert sink.dropped == 1
    store.gate.set()
    await sink.stop()
    assert sink.written == 3
    assert len(await store.search(AccessQuery())) == 3


async def test_records_are_written_in_batches_and_published_and_flushed_at_stop() -> None:
    store = GatedStore()
    bus = MemoryEventBus()
    published = bus.subscribe("access")
    sink = AccessLogSink(store, bus, batch=50, linger_seconds=60)
    await sink.start()
    for n in range(120):
        await sink.put(_record(n))
    store.gate.set()

    await sink.stop()  # does not wait for the linger: writes what is queued, then stops

    assert sink.written == 120 and sum(store.batches) == 120
    assert max(store.batches) == 50 and len(store.batches) <= 4
    assert published.qsize() == 120
    await sink.put(_record(999))  # after stop: counted, never silently lost
    assert sink.dropped == 1
