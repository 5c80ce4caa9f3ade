"""Sinks: where readings go (Home Assistant over MQTT, InfluxDB, emulated Kasa plugs)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from ..model import Event
from ..stats import SinkStats


class Sink(ABC):
    """A destination for events. The hub feeds each sink from its own bounded queue.

    `handle` should return quickly (update state, append to a spool) and leave
    network I/O to the sink's own background task started in `start`, so a slow
    peer never holds up the hub.
    """

    name: str = ""

    def __init__(self) -> None:
        self.stats = SinkStats()

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Start background tasks (connections). Must not block on the network."""

    @abstractmethod
    async def handle(self, events: Sequence[Event]) -> None:
        """Take a batch of events, oldest first."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush what is pending and stop. The caller bounds the time it may take."""
