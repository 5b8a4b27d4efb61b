"""C-STORE sub-operations of C-GET and C-MOVE (PS3.4 C.4.2.3, C.4.3.3) that send the
stored bytes.

pynetdicom's ``Association.send_c_store`` re-encodes a pydicom Dataset (group lengths
dropped, sequences rewritten), so it cannot send an object byte for byte.  Here an
:class:`EncodedInstance` carries the stored Part-10 file; :func:`prepare_association`
makes the association's ``send_c_store`` (which pynetdicom's C-GET and C-MOVE SCPs
call for every sub-operation) send its dataset bytes unchanged when the peer accepted
the stored transfer syntax for the SOP Class, and otherwise converted to a transfer
syntax the peer accepted (PS3.4 C.4.2.3.1 Note 1; PS3.5 Annex A).  When neither is
possible the sub-operation fails with a reason.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any, Final

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import PresentationContext

from dicomcloud.dimse.contexts import UNCOMPRESSED_LITTLE_ENDIAN
from dicomcloud.domain.records import InstanceRecord
from dicomcloud.errors import DicomCloudError
from dicomcloud.services.syntaxes import is_lossy
from dicomcloud.services.transcode import can_transcode, transcode_part10

__all__ = [
    "EncodedInstance",
    "SubOperationFailed",
    "dataset_offset",
    "prepare_association",
    "send_encoded",
    "set_nodelay",
]

log = logging.getLogger(__name__)

#: How long pynetdicom's DUL reactor sleeps when there is nothing to do.
DUL_POLL_SECONDS: Final = 0.0002
#: Conversion targets, most preferred first, when the stored syntax was not accepted.
FALLBACK_SYNTAXES: Final = UNCOMPRESSED_LITTLE_ENDIAN

_LONG_LENGTH_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


class SubOperationFailed(Exception):
    """A C-STORE sub-operation that could not be attempted; the message says why."""


class EncodedInstance(Dataset):
    """A stored instance to send in a C-STORE sub-operation.

    It is a Dataset (pynetdicom's C-GET and C-MOVE SCPs accept nothing else) holding
    only the SOP Class and Instance UIDs (reported in the Failed SOP Instance UID List);
    the object itself is ``part10``, the stored file, or None with ``problem`` saying
    why it could not be read.  ``move_originator`` is the AE title of the C-MOVE SCU
    (PS3.7 9.1.1.1: Move Originator Application Entity Title), which pynetdicom 3.0
    would fill with our own.
    """

    def __init__(self, record: InstanceRecord, part10: bytes | None, problem: str = "") -> None:
        super().__init__()
        self.SOPClassUID = record.sop_class_uid
        self.SOPInstanceUID = record.sop_instance_uid
        self.stored_syntax: str = record.transfer_syntax_uid
        self.part10: bytes | None = part10
        self.problem: str = problem
        self.move_originator: str | None = None
        #: The instance's viewer-ready copy in a transfer syntax, or None (blocking:
        #: called from the association's thread); None: no copies are kept.
        self.load_copy: Callable[[str], bytes | None] | None = None


def set_nodelay(event: Any) -> None:
    """Turn Nagle off: pynetdicom leaves it on, which stalls each PDU by ~40 ms."""
    try:
        sock = event.assoc.dul.socket.socket
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # pynetdicom's DUL reactor polls; its 1 ms idle sleep adds up to a millisecond
        # to every PDU exchanged.  A shorter one costs a little CPU per open association.
        event.assoc.dul._run_loop_delay = DUL_POLL_SECONDS
    except (AttributeError, OSError):  # not TCP (tests with socketpair), or closed
        pass


def prepare_association(event: Any) -> None:
    """EVT_CONN_OPEN handler: TCP_NODELAY, and C-STORE requests of
    :class:`EncodedInstance` objects send the stored bytes (:func:`send_encoded`)."""
    set_nodelay(event)
    assoc = event.assoc
    plain = assoc.send_c_store

    def send_c_store(
        dataset: Any,
        msg_id: int = 1,
        priority: int = 2,
        originator_aet: str | None = None,
        originator_id: int | None = None,
    ) -> Dataset:
        if isinstance(dataset, EncodedInstance):
            return send_encoded(assoc, dataset, msg_id, priority, originator_aet, originator_id)
        result: Dataset = plain(dataset, msg_id, priority, originator_aet, originator_id)
        return result

    # An instance attribute: pynetdicom's Q/R SCP calls assoc.send_c_store().
    assoc.send_c_store = send_c_store


def dataset_offset(part10: bytes) -> int:
    """Where the dataset of a PS3.10 file starts: after the preamble and the File Meta
    Information elements, always Explicit VR Little Endian (PS3.10 7.1)."""
    if part10[128:132] != b"DICM":
        raise SubOperationFailed("the stored object is not a PS3.10 file")
    pos = 132
    while pos + 8 <= len(part10) and struct.unpack_from("<H", part10, pos)[0] == 0x0002:
        if part10[pos + 4 : pos + 6] in _LONG_LENGTH_VRS:
            pos += 12 + struct.unpack_from("<I", part10, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", part10, pos + 6)[0]
    return pos


def _sending_contexts(assoc: Any, sop_class: str) -> dict[str, PresentationContext]:
    """Accepted contexts on which we may send ``sop_class``, by transfer syntax."""
    found: dict[str, PresentationContext] = {}
    for context in assoc.accepted_contexts:
        if context.abstract_syntax == sop_class and context.as_scu:
            found.setdefault(str(context.transfer_syntax[0]), context)
    return found


def encoding_for(assoc: Any, instance: EncodedInstance) -> tuple[PresentationContext, bytes]:
    """The context to send ``instance`` on and its dataset bytes in that context's
    transfer syntax: the stored bytes if the peer accepted the stored syntax, else
    converted to Explicit or Implicit VR Little Endian, else any accepted syntax this
    archive can convert to."""
    if instance.part10 is None:
        raise SubOperationFailed(instance.problem or "the stored object could not be read")
    sop_class = str(instance.SOPClassUID)
    contexts = _sending_contexts(assoc, sop_class)
    if not contexts:
        raise SubOperationFailed(f"no presentation context was accepted for {sop_class}")
    stored = instance.stored_syntax
    if stored in contexts:
        return contexts[stored], instance.part10[dataset_offset(instance.part10) :]
    # Never lossy on the archive's initiative: a lossy target only for lossy originals.
    targets = [
        *FALLBACK_SYNTAXES,
        *(
            ts
            for ts in contexts
            if ts not in FALLBACK_SYNTAXES and (is_lossy(stored) or not is_lossy(ts))
        ),
    ]
    problems: list[str] = []
    for target in targets:
        if target in contexts and can_transcode(stored, target):
            try:
                kept = instance.load_copy(target) if instance.load_copy is not None else None
                converted = kept if kept is not None else transcode_part10(instance.part10, target)
            except (DicomCloudError, ValueError) as exc:
                problems.append(getattr(exc, "reason", str(exc)))
                continue
            return contexts[target], converted[dataset_offset(converted) :]
    if problems:
        raise SubOperationFailed("; ".join(problems))
    raise SubOperationFailed(
        f"the peer accepted {', '.join(contexts)} for {sop_class}; "
        f"the object is stored as {stored} and cannot be converted to them"
    )


#: Longer than one turn of pynetdicom's association reactor loop (a 1 ms sleep).
_REACTOR_TURN_SECONDS: Final = 0.005


def _pause_reactor(assoc: Any) -> None:
    """Stop a requestor association's reactor from taking DIMSE messages (our C-STORE
    responses) off the queue, once per association.

    pynetdicom's own pause (clear the checkpoint, wait for ``_is_paused``) can let the
    reactor slip through one last turn, in which it takes and drops a response that has
    just arrived ("Received unexpected C-STORE service message").  Nothing has been
    sent yet when this runs, so waiting one turn after the pause is seen makes sure the
    reactor is blocked before the first request goes out."""
    if getattr(assoc, "_dicomcloud_paused", False):
        return
    assoc._reactor_checkpoint.clear()
    for _ in range(2):
        while not assoc._is_paused and assoc.is_established:
            time.sleep(0.0001)
        time.sleep(_REACTOR_TURN_SECONDS)
    assoc._dicomcloud_paused = True


def send_encoded(
    assoc: Any,
    instance: EncodedInstance,
    msg_id: int = 1,
    priority: int = 2,
    originator_aet: str | None = None,
    originator_id: int | None = None,
) -> Dataset:
    """Send ``instance`` in a C-STORE request (PS3.7 9.1.1) and return the response's
    status elements, like pynetdicom's ``Association.send_c_store`` (whose DIMSE
    exchange this repeats, with an already encoded data set).  Raises
    :class:`SubOperationFailed` when it cannot be sent at all."""
    try:
        context, data = encoding_for(assoc, instance)
    except SubOperationFailed as exc:
        instance.problem = str(exc)
        log.warning("C-STORE sub-operation of %s not attempted: %s", instance.SOPInstanceUID, exc)
        raise
    request = C_STORE()
    request.MessageID = msg_id
    request.Priority = priority
    if originator_aet is not None and instance.move_originator:
        originator_aet = instance.move_originator
    request.MoveOriginatorApplicationEntityTitle = originator_aet
    request.MoveOriginatorMessageID = originator_id
    request.AffectedSOPClassUID = instance.SOPClassUID
    request.AffectedSOPInstanceUID = instance.SOPInstanceUID
    request.DataSet = BytesIO(data)
    if assoc.is_acceptor:
        # C-GET: we run inside the reactor's own _serve_request (it is paused); resume
        # it afterwards as pynetdicom's send_c_store does.
        assoc._reactor_checkpoint.clear()
        try:
            assoc.dimse.send_msg(request, context.context_id)
            _, response = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
    else:
        # C-MOVE: our own association with the destination; its reactor stays paused
        # until pynetdicom releases the association.
        _pause_reactor(assoc)
        assoc.dimse.send_msg(request, context.context_id)
        _, response = assoc.dimse.get_msg(block=True)
    if response is None:  # DIMSE timeout: pynetdicom aborts the association
        assoc._handle_no_response()
        return Dataset()
    status: Dataset = assoc._check_received_status(response)
    return status
