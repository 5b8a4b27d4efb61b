"""Event-driven reactors for pynetdicom's acceptor associations.

pynetdicom 3.0 runs two polling loops per association: the DUL thread sleeps
``_run_loop_delay`` between checks of the socket and of its outgoing queue, and the
association thread sleeps 1 ms between checks for a decoded DIMSE message.  Each
C-STORE therefore waits up to a millisecond or more for the loops to notice it, and an
idle association still wakes thousands of times a second (CPU the other associations
need).  Here both loops block instead, and wake at once when there is work:

* the DUL waits in ``select`` on the peer's socket and on a wake-up socket that
  ``send_pdu`` (a primitive to send) and ``kill_dul`` write to;
* the association waits on the DIMSE message queue.

Both still wake every ``IDLE_WAIT`` seconds to run pynetdicom's timer, release, abort
and shutdown checks, which are unchanged (the same methods pynetdicom calls).  The
subclasses change no state machine (PS3.8 9.2) and no message handling: only how the
threads wait.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import time
from typing import Any

from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.utils import make_target

#: Longest a reactor sleeps before re-checking timers and flags (seconds).
IDLE_WAIT = 0.005


class PromptDUL(DULServiceProvider):  # type: ignore[misc]
    """A DUL reactor that sleeps in ``select`` until the peer or the user has work."""

    _waker: tuple[socket.socket, socket.socket] | None = None

    def _prepare_waker(self) -> None:
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._waker = (reader, writer)

    def _wake(self) -> None:
        waker = self._waker
        if waker is not None:
            # OSError: full (a wake-up is pending anyway) or already closed
            with contextlib.suppress(OSError):
                waker[1].send(b"\0")

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def stop_dul(self) -> bool:
        self._wake()
        stopped: bool = super().stop_dul()
        return stopped

    def _wait_for_work(self) -> None:
        """Block until the socket is readable, a wake-up arrives, or ``IDLE_WAIT``."""
        waker = self._waker
        transport = getattr(self.socket, "socket", None)
        if waker is None or transport is None:
            time.sleep(self._run_loop_delay)
            return
        if isinstance(transport, ssl.SSLSocket):
            try:
                if transport.pending():
                    return  # decrypted bytes already buffered, which select() cannot see
            except (OSError, ValueError):  # closed meanwhile
                return
        try:
            select.select([transport, waker[0]], [], [], IDLE_WAIT)
        except (OSError, ValueError):  # the socket was closed meanwhile
            return
        try:
            while waker[0].recv(4096):
                pass
        except OSError:  # drained (BlockingIOError) or closed
            pass

    def run_reactor(self) -> None:
        """pynetdicom's reactor steps, with a blocking wait where it sleeps."""
        self._prepare_waker()
        try:
            self._react()
        finally:
            waker, self._waker = self._waker, None
            if waker is not None:
                waker[0].close()
                waker[1].close()

    def _react(self) -> None:
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                idle = True
            if idle:
                self._wait_for_work()
            if self._kill_thread:
                return
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")  # PS3.8 9.2: ARTIM timer expired
            # Per turn, either send one queued primitive or read one PDU; a failure
            # aborts the association, as in the base class.
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                self._abort_on_error()
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False

    def _abort_on_error(self) -> None:
        """What pynetdicom does when reading or sending fails: A-ABORT and stop."""
        from pynetdicom.dul import LOGGER
        from pynetdicom.pdu import A_ABORT_RQ

        LOGGER.exception("Exception in DUL.run(), aborting association")
        abort = A_ABORT_RQ()
        abort.source = 0x02
        abort.reason_diagnostic = 0x00
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.send(abort.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class PromptAssociation(Association):  # type: ignore[misc]
    """An acceptor association whose reactor waits on the DIMSE message queue."""

    def _run_reactor(self) -> None:
        self._is_paused = False
        while not self._kill:
            # The user may pause the reactor to exchange messages itself.
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            try:
                context_id, msg = self.dimse.msg_queue.get(timeout=IDLE_WAIT)
            except queue.Empty:
                msg = None
            if msg and context_id is not None:
                self._serve_request(msg, context_id)
            if self._association_ended():
                return

    def _association_ended(self) -> bool:
        """pynetdicom's end-of-association checks (release, abort, transport, timeout)."""
        from pynetdicom import evt
        from pynetdicom.association import LOGGER

        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            LOGGER.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return True
        if self.acse.is_aborted():
            LOGGER.info(
                "Association Aborted"
                + (" (A-P-ABORT)" if self.acse.is_aborted("a-p-abort") else "")
            )
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return True
        if not self.dul.is_alive():
            self.kill()
            return True
        if self.dul.idle_timer_expired():
            LOGGER.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return True
        return False


def make_prompt(assoc: Association) -> None:
    """Switch a new, not yet started acceptor association to the prompt reactors."""
    assoc.__class__ = PromptAssociation
    dul = assoc.dul
    dul.__class__ = PromptDUL
    # The DUL thread's target was bound to the base class's reactor in __init__.
    dul._target = make_target(dul.run_reactor)  # type: ignore[attr-defined]
