"""The user consumer of docs/events.md ("Your own consumer"), as a test loads it: hand
each new study to an AI model (here: remember what would be sent)."""

from __future__ import annotations

from dicomcloud.domain.events import INSTANCE_STORED, StoredEvent
from dicomcloud.ports import Delivery
from dicomcloud.workers import Consumer

#: (tenant, StudyInstanceUID, SOPInstanceUID) handed to the "model", in order.
sent: list[tuple[str, str, str]] = []
#: Studies whose events fail (to show retries and the dead-letter stream).
failing_studies: set[str] = set()


async def route_to_ai(delivery: Delivery) -> None:
    event = StoredEvent.from_json(delivery.payload)
    if event.type != INSTANCE_STORED:
        return
    if event.study_instance_uid in failing_studies:
        raise ConnectionError("the AI model does not answer")
    item = (event.tenant_id, event.study_instance_uid, event.sop_instance_uid)
    if item not in sent:  # idempotent: a redelivered event is not sent twice
        sent.append(item)


consumer = Consumer(group="ai-router", handle=route_to_ai)
