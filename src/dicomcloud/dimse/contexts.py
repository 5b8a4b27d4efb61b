"""Presentation contexts the SCP accepts (PS3.4 Annex B, PS3.5 Annex A).

Every Storage SOP Class of the standard that pynetdicom knows, each with every transfer
syntax of pydicom's registry plus those of PS3.5 Annex A that pydicom 3.0 does not
list yet.  The archive stores what it receives as received, so it needs no codec to
accept a transfer syntax.
"""

from __future__ import annotations

from typing import Any

from pydicom.uid import (
    AllTransferSyntaxes,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

#: PS3.5 Annex A transfer syntaxes missing from pydicom 3.0's registry.
EXTRA_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.4.94",  # JPIP Referenced
    "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
    "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
    "1.2.840.10008.1.2.4.111",  # JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112",  # JPEG XL
    "1.2.840.10008.1.2.8.1",  # Deflated Image Frame Compression
)

STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = tuple(
    dict.fromkeys([*(str(uid) for uid in AllTransferSyntaxes), *EXTRA_TRANSFER_SYNTAXES])
)

VERIFICATION_SOP_CLASS = str(Verification)

#: What any stored object can be converted to for a receiver (PS3.5 A.1, A.2).
UNCOMPRESSED_LITTLE_ENDIAN: tuple[str, ...] = (
    str(ExplicitVRLittleEndian),
    str(ImplicitVRLittleEndian),
)

#: Patient Root and Study Root Query/Retrieve Information Model - FIND (PS3.4 C.6.1,
#: C.6.2).
FIND_SOP_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.2.1.1",
    "1.2.840.10008.5.1.4.1.2.2.1",
)
#: The uncompressed transfer syntaxes of a query identifier.
FIND_TRANSFER_SYNTAXES: tuple[str, ...] = (
    str(ImplicitVRLittleEndian),
    str(ExplicitVRLittleEndian),
    str(ExplicitVRBigEndian),
)


def storage_sop_classes() -> list[str]:
    """UIDs of every Storage SOP Class (PS3.4 B.5)."""
    contexts: list[PresentationContext] = AllStoragePresentationContexts
    return [str(cx.abstract_syntax) for cx in contexts]


#: Patient Root and Study Root Query/Retrieve Information Model - MOVE (PS3.4 C.6.1,
#: C.6.2).
MOVE_SOP_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.2.1.2",
    "1.2.840.10008.5.1.4.1.2.2.2",
)
#: Patient Root and Study Root Query/Retrieve Information Model - GET (PS3.4 C.6.1,
#: C.6.2).
GET_SOP_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.2.1.3",
    "1.2.840.10008.5.1.4.1.2.2.3",
)
#: Patient Root models (the others are Study Root).
PATIENT_ROOT_SOP_CLASSES: frozenset[str] = frozenset(
    {FIND_SOP_CLASSES[0], MOVE_SOP_CLASSES[0], GET_SOP_CLASSES[0]}
)


def prefer_little_endian_for_retrieve(event: Any) -> None:
    """EVT_REQUESTED handler: for each Storage SOP Class the requestor proposes with the
    SCP role (to receive C-GET sub-operations, PS3.4 C.4.3; PS3.7 D.3.3.4), accept
    first the uncompressed Little Endian syntaxes it proposed, in its order.

    pynetdicom accepts the first of the acceptor's syntaxes the requestor proposed;
    ours start with Implicit VR Little Endian, so a C-GET SCU proposing one context per
    SOP Class (dcmtk's getscu) would get everything converted to Implicit VR even when
    it prefers the Explicit VR most objects are stored in.  Compressed syntaxes proposed
    in the same context are not preferred: an object stored uncompressed could not be
    sent in them.  An SCU that proposes a separate context per syntax gets each
    accepted, and every object in its stored syntax.
    """
    assoc = event.assoc
    requestor = assoc.requestor
    receiving = {str(uid) for uid, item in requestor.role_selection.items() if item.scp_role}
    if not receiving:
        return
    preferred: dict[str, list[str]] = {}
    for context in requestor.primitive.presentation_context_definition_list:
        sop_class = str(context.abstract_syntax)
        if sop_class in receiving:
            order = preferred.setdefault(sop_class, [])
            for syntax in map(str, context.transfer_syntax):
                if syntax in UNCOMPRESSED_LITTLE_ENDIAN and syntax not in order:
                    order.append(syntax)
    contexts: list[PresentationContext] = []
    for context in assoc.acceptor.supported_contexts:
        first = preferred.get(str(context.abstract_syntax))
        if first:
            rest = [str(ts) for ts in context.transfer_syntax if str(ts) not in first]
            context.transfer_syntax = [*first, *rest]
        contexts.append(context)
    assoc.acceptor.supported_contexts = contexts
