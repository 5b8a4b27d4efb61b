"""Event buses (chosen by URL) and the outbox relay that feeds them."""

from __future__ import annotations

from urllib.parse import urlparse

from dicomcloud.errors import ConfigurationError
from dicomcloud.events.memory import MemoryEventBus
from dicomcloud.events.outbox import OutboxRelay
from dicomcloud.ports import EventBus

__all__ = ["MemoryEventBus", "OutboxRelay", "open_event_bus"]


def open_event_bus(url: str) -> EventBus:
    """The event bus for ``url`` (``memory://`` runs in-process)."""
    scheme = urlparse(url).scheme
    if scheme == "memory":
        return MemoryEventBus()
    raise ConfigurationError(f"events.url scheme {scheme!r} is not supported (use memory://)")
