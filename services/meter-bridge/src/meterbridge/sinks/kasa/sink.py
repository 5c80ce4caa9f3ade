"""`KasaSink`: keeps the latest values of the meters the plugs report, serves the plugs."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from ...model import Event, MeterAvailability, Reading
from .. import Sink
from .config import SENSE_PLUG_LIMIT, KasaConfig
from .plugs import PlugBook
from .server import KasaServer

_LOGGER = logging.getLogger(__name__)


class KasaSink(Sink):
    """Emulated Kasa HS110 plugs; `handle` only updates in-memory values (never blocks).

    `start` raises `OSError` when the port cannot be bound.
    """

    name = "kasa"

    def __init__(self, config: KasaConfig) -> None:
        super().__init__()
        self.config = config
        self.book = PlugBook(config, time.monotonic())
        self.server = KasaServer(config, self.book, self.stats)

    async def start(self) -> None:
        """Bind the UDP and TCP sockets."""
        if len(self.book.exposed) > SENSE_PLUG_LIMIT:
            _LOGGER.warning(
                "Kasa: %d plugs exposed; Sense handles about %d well (group some into an aggregate)",
                len(self.book.exposed),
                SENSE_PLUG_LIMIT,
            )
        await self.server.start()
        self.stats.connected = True

    async def handle(self, events: Sequence[Event]) -> None:
        """Take readings and availability changes of the plugs' meters."""
        for event in events:
            if isinstance(event, Reading | MeterAvailability):
                self.book.apply(event)

    async def close(self) -> None:
        """Close the sockets."""
        self.stats.connected = False
        await self.server.close()
