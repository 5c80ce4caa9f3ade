"""Reading EMU-2 fixture streams the way their expected `.json` files are written."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from meterbridge.model import Reading
from meterbridge.sources.emu2.parser import Emu2Event, Emu2Parser

#: What the parser stamps readings without a timestamp with, in the fixtures.
CLOCK = datetime(2026, 1, 1, tzinfo=UTC)


def as_json(event: Emu2Event) -> dict[str, Any]:
    """An event as it is written in the fixtures' expected `.json`."""
    if isinstance(event, Reading):
        return {"reading": event.quantity.value, "value": event.value, "ts": event.ts.isoformat()}
    fields = dataclasses.asdict(event)
    return {"event": type(event).__name__, **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}


def parse(stream: bytes, chunks: list[int] | None = None, meter_mac: str | None = None) -> list[dict[str, Any]]:
    parser = Emu2Parser("meter", meter_mac=meter_mac, clock=lambda: CLOCK)
    out: list[Emu2Event] = []
    if chunks is None:
        out += parser.feed(stream)
    else:
        pos = 0
        for size in chunks:
            out += parser.feed(stream[pos : pos + size])
            pos += size
        out += parser.feed(stream[pos:])
    return [as_json(event) for event in out]
