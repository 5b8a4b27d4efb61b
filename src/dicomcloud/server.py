"""``dicomcloud serve``: DICOMweb (uvicorn) and DIMSE (pynetdicom) in one or more processes.

One Python process uses about one core, so ``server.workers`` processes share the HTTP
and DICOM ports with SO_REUSEPORT (the kernel spreads new connections over them).  The
parent applies migrations once, reserves the ports, starts the workers and restarts any
that dies; every worker is a complete archive node on the same index and storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any

import uvicorn

from dicomcloud.app import Archive, sweep_temporary_files
from dicomcloud.config import Settings, redact_url
from dicomcloud.dicomweb.app import create_app
from dicomcloud.dimse.server import DimseServer
from dicomcloud.errors import ConfigurationError
from dicomcloud.security.exposure import check_exposure
from dicomcloud.tls import server_context

log = logging.getLogger(__name__)


class _GracefulServer(uvicorn.Server):
    """uvicorn, minus its habit of re-raising SIGTERM/SIGINT once HTTP has stopped.

    uvicorn re-raises the signal at the end of ``serve()``, which kills the process
    before the DIMSE server and the archive (group commit, outbox relay, index) are
    stopped.  Here a signal only asks the server to exit; ``run`` then shuts every
    part down in order and the command returns normally (exit status 0).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (faster callbacks, futures and
    thread hand-offs than the default loop), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # not on Windows
        asyncio.run(main)
    else:
        uvloop.run(main)


def worker_count(settings: Settings) -> int:
    return settings.server.workers or max(1, min(os.cpu_count() or 1, 4))


def reuse_port_socket(host: str, port: int, *, listen: bool) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT (listening, or only reserving the port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only
    # for sockets that say so, and without it every response stalls ~40 ms (Nagle and
    # delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(1024)
    return sock


async def run(settings: Settings, *, migrate: bool = True, primary: bool = True) -> None:
    """Serve until interrupted (SIGINT / SIGTERM), then stop cleanly."""
    archive = await Archive.open(settings, migrate=migrate)
    roles = set(settings.server.roles)
    await archive.start(relay=primary, workers="worker" in roles and settings.workers.in_process)
    dimse = DimseServer(
        settings,
        archive.ingest,
        asyncio.get_running_loop(),
        query=archive.query,
        blobs=archive.blobs,
        reuse_port=not primary or worker_count(settings) > 1,
        access=archive.access,
        retrieve=archive.retrieve,
    )
    http_socket: socket.socket | None = None
    try:
        if "dimse" in roles:
            dimse.start()
        web = create_app(archive, probes_only="web" not in roles)
        config = uvicorn.Config(
            web,
            host=settings.server.host,
            port=settings.server.http_port,
            log_level=settings.log_level.lower(),
            access_log=settings.log_level == "DEBUG",
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        scheme = "http"
        if settings.server.tls.enabled:
            config.load()
            config.ssl = server_context(settings.server.tls, "server.tls")
            scheme = "https"
        server = _GracefulServer(config)
        sockets = None
        if worker_count(settings) > 1:
            http_socket = reuse_port_socket(
                settings.server.host, settings.server.http_port, listen=True
            )
            sockets = [http_socket]
        dicom = (
            "DICOM {} on port {}{}".format(
                ", ".join(sorted({t.called_ae_title for t in settings.dimse.tenants}))
                or settings.server.ae_title,
                dimse.port,
                " (TLS)" if settings.dimse.tls.enabled else "",
            )
            if "dimse" in roles
            else "no DICOM port"
        )
        log.info(
            "dicomcloud %s (%s): %s on %s://%s:%d, %s, index %s, storage %s",
            f"worker {os.getpid()}",
            ",".join(settings.server.roles),
            "DICOMweb" if "web" in roles else "health probes",
            scheme,
            settings.server.host,
            settings.server.http_port,
            dicom,
            redact_url(settings.index_url),
            redact_url(settings.storage_url),
        )
        await server.serve(sockets=sockets)
    finally:
        await asyncio.to_thread(dimse.stop)
        await archive.stop()
        if http_socket is not None:
            http_socket.close()


async def run_workers(settings: Settings, consumers: Sequence[str] = ()) -> None:
    """``dicomcloud worker``: consume events until SIGINT / SIGTERM, then stop the
    consumers (an unfinished message is left unacknowledged, for redelivery)."""
    if settings.events.url.startswith("memory:"):
        raise ConfigurationError(
            "dicomcloud worker needs a bus shared with dicomcloud serve: set events.url to "
            "redis://... or kafka://... (memory:// events stay inside the serve process)"
        )
    archive = await Archive.open(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stopping.set)
    try:
        await archive.start_workers(consumers)
        log.info(
            "dicomcloud worker %d: consuming events of %s",
            os.getpid(),
            redact_url(settings.events.url),
        )
        await stopping.wait()
    finally:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        await archive.stop()


def _worker_main(settings_data: dict[str, Any], primary: bool, log_level: str) -> None:
    from dicomcloud.cli import configure_logging

    configure_logging(log_level)
    settings = Settings.model_validate(settings_data)
    with contextlib.suppress(KeyboardInterrupt):
        run_event_loop(run(settings, migrate=False, primary=primary))


def serve(settings: Settings) -> None:
    """Run ``dicomcloud serve`` with ``server.workers`` processes."""
    check_exposure(settings)
    workers = worker_count(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sweep_temporary_files(settings)
    if workers == 1:
        run_event_loop(run(settings))
        return
    from dicomcloud.index.migrate import migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(migrate(settings.index_url))
    # Reserve the ports (bound, not listening: no connection is routed to these).
    host = settings.server.host
    http_reserved = reuse_port_socket(host, settings.server.http_port, listen=False)
    dicom_reserved = reuse_port_socket(host, settings.server.dicom_port, listen=False)
    data = settings.model_dump(mode="json")
    # JSON mode masks secrets ("**********"); the workers need the real keys.
    data["storage"]["encryption"]["keys"] = {
        key_id: secret.get_secret_value()
        for key_id, secret in settings.storage.encryption.keys.items()
    }
    data["server"]["http_port"] = http_reserved.getsockname()[1]
    data["server"]["dicom_port"] = dicom_reserved.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start(index: int) -> multiprocessing.process.BaseProcess:
        process = context.Process(
            target=_worker_main,
            args=(data, index == 0, settings.log_level),
            name=f"dicomcloud-worker-{index}",
        )
        process.start()
        return process

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes = [start(i) for i in range(workers)]
    log.info("dicomcloud: %d worker processes", workers)
    try:
        while not stopping:
            time.sleep(0.2)
            for index, process in enumerate(processes):
                if not process.is_alive() and not stopping:
                    log.error("worker %d exited with %s; restarting", index, process.exitcode)
                    time.sleep(1.0)
                    processes[index] = start(index)
    finally:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
        http_reserved.close()
        dicom_reserved.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
