"""C-MOVE SCP (PS3.4 C.4.2): the matching instances are sent in C-STORE sub-operations
on a new association with the Move Destination, whose address comes from the
``[dimse.destinations]`` table of the configuration, or of the association's tenant
(``[[dimse.tenants]]`` ``destinations``); an unknown AE title is refused with 0xA801.
The association proposes, for every SOP Class to send, each stored transfer syntax in
its own presentation context and one context with Explicit and Implicit VR Little
Endian, into which an object is converted when its stored syntax is refused."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, Final

from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.presentation import PresentationContext, build_context

from dicomcloud.config import Settings
from dicomcloud.dimse.contexts import VERIFICATION_SOP_CLASS
from dicomcloud.dimse.retrieve import (
    STATUS_UNABLE_TO_PROCESS,
    InstanceSource,
    RetrieveFailed,
    failure,
    parse_retrieve_identifier,
    store_sub_operations,
)
from dicomcloud.dimse.store_scu import FALLBACK_SYNTAXES, prepare_association
from dicomcloud.dimse.tenancy import association_tenant
from dicomcloud.domain.query import QueryError
from dicomcloud.domain.records import InstanceRecord
from dicomcloud.tls import client_context

__all__ = ["destination_contexts", "handle_move"]

log = logging.getLogger(__name__)

#: Presentation contexts one association can propose (PS3.8 9.3.2.2: odd IDs 1-255).
MAX_CONTEXTS: Final = 128
#: Proposed when there is nothing to send: pynetdicom opens the association before it
#: lets the handler answer a failure, so it must succeed with any Storage SCP
#: (Implicit VR Little Endian is the default every SCP accepts, PS3.5 10.1).
_ANY_STORAGE_SCP: Final = (
    VERIFICATION_SOP_CLASS,
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
)


def destination_contexts(records: Sequence[InstanceRecord]) -> list[PresentationContext]:
    """The presentation contexts to propose for sending ``records``: (SOP Class, stored
    syntax) pairs first, then a Little Endian fallback per SOP Class, at most 128."""
    stored: dict[tuple[str, str], None] = {}
    for record in records:
        stored[(record.sop_class_uid, record.transfer_syntax_uid)] = None
    classes = dict.fromkeys(sop_class for sop_class, _ in stored)
    contexts = [build_context(sop_class, [syntax]) for sop_class, syntax in stored]
    contexts += [build_context(sop_class, list(FALLBACK_SYNTAXES)) for sop_class in classes]
    if len(contexts) > MAX_CONTEXTS:
        log.warning(
            "C-MOVE needs %d presentation contexts; proposing the first %d",
            len(contexts),
            MAX_CONTEXTS,
        )
    return contexts[:MAX_CONTEXTS]


def handle_move(event: Any, source: InstanceSource, settings: Settings) -> Iterator[Any]:
    """EVT_C_MOVE handler: the destination (address, port, association options), the
    number of sub-operations, then (status, dataset) pairs.

    pynetdicom opens the association with the destination after the number (when it is
    not 0) and only then lets the handler answer, so a request that cannot be served
    (0xC000 with an ErrorComment for an invalid identifier, 0xA701 when the index cannot
    be searched) briefly associates with the destination first."""
    tenant = association_tenant(event.assoc)
    destination = str(event.move_destination or "").strip()
    address = tenant.destination(destination)
    if address is None:
        log.warning("C-MOVE to unknown destination %r refused", destination)
        yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
        return
    problem: Dataset | None = None
    records: list[InstanceRecord] = []
    try:
        query = parse_retrieve_identifier(event.identifier, str(event.request.AffectedSOPClassUID))
        records = source.select(tenant.tenant_id, query)
    except QueryError as exc:
        problem = failure(STATUS_UNABLE_TO_PROCESS, str(exc))
    except RetrieveFailed as exc:
        problem = failure(exc.status, exc.comment)
    except Exception as exc:  # an identifier pydicom cannot decode
        problem = failure(STATUS_UNABLE_TO_PROCESS, f"cannot read the identifier: {exc}")
    contexts = destination_contexts(records) or [
        build_context(sop_class, [str(ImplicitVRLittleEndian)]) for sop_class in _ANY_STORAGE_SCP
    ]
    options = {
        "contexts": contexts,
        "evt_handlers": [(evt.EVT_CONN_OPEN, prepare_association)],
        "max_pdu": settings.dimse.max_pdu_length,
    }
    if settings.dimse.destination_uses_tls(destination):  # PS3.15 B.1
        options["tls_args"] = (client_context(settings.dimse.tls, "dimse.tls"), address[0])
    yield address[0], address[1], options
    if problem is not None:
        yield 1
        yield problem, None
        return
    yield len(records)
    originator = str(event.assoc.requestor.ae_title).strip()
    yield from store_sub_operations(event, source, records, move_originator=originator)
