"""SOP Class Extended Negotiation for the Query/Retrieve FIND SOP Classes (PS3.4
C.5.1.1.1, PS3.7 D.3.3.5).

The SCU proposes, per FIND SOP Class, up to five one-byte options (Table C.5-1):
relational queries, combined date-time matching, fuzzy semantic matching of person
names, timezone query adjustment and enhanced multi-frame image conversion.  The SCP
answers each with 1 (supported) or 0 (not).  This archive supports:

* combined date-time matching: always applied, negotiated or not, so that C-FIND gives
  the answers QIDO-RS gives for the same keys (PS3.4 C.2.2.2.5.1);
* fuzzy semantic matching of person names: applied on the associations that
  negotiated it, as QIDO-RS's ``fuzzymatching=true`` (case, accents and width folded,
  PS3.4 C.2.2.2.1.1).

Relational queries, timezone adjustment and enhanced multi-frame conversion are
answered 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from dicomcloud.dimse.contexts import FIND_SOP_CLASSES

__all__ = ["accept_find_options", "fuzzy_negotiated"]

#: The options of Table C.5-1 this SCP supports, by their byte's position (0-based).
_SUPPORTED: Final = {1: True, 2: True}  # combined date-time, fuzzy person names
_FUZZY_BYTE: Final = 2
#: Where an association keeps what it accepted: {SOP Class UID: the reply's bytes}.
_ACCEPTED_ATTRIBUTE: Final = "dicomcloud_find_options"


def _reply(proposed: bytes) -> bytes:
    """The SCP's answer to one FIND SOP Class's proposed options: 1 where proposed and
    supported, 0 otherwise, as many bytes as proposed (at most five)."""
    return bytes(
        1 if value == 1 and _SUPPORTED.get(position, False) else 0
        for position, value in enumerate(proposed[:5])
    )


def accept_find_options(event: Any) -> dict[str, bytes]:
    """``EVT_SOP_EXTENDED`` handler: answer the FIND SOP Classes' items and remember the
    answer on the association; other SOP Classes' items get no answer (PS3.7 D.3.3.5:
    the SCP may leave an item unanswered, which the SCU reads as not supported)."""
    app_info: Mapping[str, bytes] = event.app_info
    accepted = {
        str(uid): _reply(bytes(info))
        for uid, info in app_info.items()
        if str(uid) in FIND_SOP_CLASSES and info
    }
    setattr(event.assoc, _ACCEPTED_ATTRIBUTE, accepted)
    return accepted


def fuzzy_negotiated(assoc: Any, sop_class_uid: str) -> bool:
    """Whether ``assoc`` negotiated fuzzy semantic matching of person names for the FIND
    SOP Class ``sop_class_uid``."""
    accepted: Mapping[str, bytes] = getattr(assoc, _ACCEPTED_ATTRIBUTE, {})
    reply = accepted.get(sop_class_uid, b"")
    return len(reply) > _FUZZY_BYTE and reply[_FUZZY_BYTE] == 1
