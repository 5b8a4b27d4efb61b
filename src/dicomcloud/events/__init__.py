"""Event buses (chosen by URL) and the outbox relay that feeds them (docs/events.md)."""

from __future__ import annotations

from urllib.parse import urlparse

from dicomcloud.errors import ConfigurationError
from dicomcloud.events.memory import MemoryEventBus
from dicomcloud.events.outbox import OutboxRelay
from dicomcloud.ports import EventBus

__all__ = ["MemoryEventBus", "OutboxRelay", "open_event_bus"]


def open_event_bus(url: str) -> EventBus:
    """The event bus for ``url``: ``memory://`` (in-process), ``redis://`` /
    ``rediss://`` (Redis Streams) or ``kafka://`` (Kafka).  Opening connects to
    nothing: a broker that is down delays events (the outbox keeps them), not start-up."""
    scheme = urlparse(url).scheme
    if scheme == "memory":
        return MemoryEventBus()
    if scheme in ("redis", "rediss"):
        from dicomcloud.events.redis_streams import RedisStreamsEventBus

        return RedisStreamsEventBus.from_url(url)
    if scheme == "kafka":
        from dicomcloud.events.kafka import KafkaEventBus

        return KafkaEventBus.from_url(url)
    raise ConfigurationError(
        f"events.url scheme {scheme!r} is not supported (use memory://, redis:// or kafka://)"
    )
