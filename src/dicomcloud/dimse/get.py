"""C-GET SCP (PS3.4 C.4.3): the matching instances are sent back on the same
association in C-STORE sub-operations, for which the SCU proposed the Storage SOP Classes
with the SCP role (PS3.7 D.3.3.4).  pynetdicom's Q/R SCP sends a pending response with
the Remaining / Completed / Failed / Warning counts after each one (PS3.4 C.4.3.1.3)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset

from dicomcloud.dimse.retrieve import (
    STATUS_UNABLE_TO_PROCESS,
    InstanceSource,
    RetrieveFailed,
    failure,
    parse_retrieve_identifier,
    store_sub_operations,
)
from dicomcloud.dimse.tenancy import association_tenant
from dicomcloud.domain.query import QueryError

__all__ = ["handle_get"]


def handle_get(event: Any, source: InstanceSource) -> Iterator[int | tuple[int | Dataset, Any]]:
    """EVT_C_GET handler: the number of sub-operations, then (status, dataset) pairs.

    A request that cannot be served answers one failure with an ErrorComment: 0xC000
    for an identifier that is not a valid retrieve identifier, 0xA701 when the index
    cannot be searched.  No match is a success with no sub-operations."""
    try:
        query = parse_retrieve_identifier(event.identifier, str(event.request.AffectedSOPClassUID))
        records = source.select(association_tenant(event.assoc).tenant_id, query)
    except QueryError as exc:
        yield 1
        yield failure(STATUS_UNABLE_TO_PROCESS, str(exc)), None
        return
    except RetrieveFailed as exc:
        yield 1
        yield failure(exc.status, exc.comment), None
        return
    except Exception as exc:  # an identifier pydicom cannot decode
        yield 1
        yield failure(STATUS_UNABLE_TO_PROCESS, f"cannot read the identifier: {exc}"), None
        return
    yield len(records)
    yield from store_sub_operations(event, source, records)
