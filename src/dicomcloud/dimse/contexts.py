"""Presentation contexts the SCP accepts (PS3.4 Annex B, PS3.5 Annex A).

Every Storage SOP Class of the standard that pynetdicom knows, each with every transfer
syntax of pydicom's registry plus those of PS3.5 Annex A that pydicom 3.0 does not
list yet.  The archive stores what it receives as received, so it needs no codec to
accept a transfer syntax.
"""

from __future__ import annotations

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
