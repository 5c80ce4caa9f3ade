"""The hub: a stuck or slow sink never blocks a source or another sink; drops are counted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from meterbridge.hub import Hub
from meterbridge.model import Event, Quantity, Reading
from meterbridge.sinks import Sink

TS = datetime(2026, 11, 21, tzinfo=UTC)


class RecordingSink(Sink):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.events: list[Event] = []

    async def handle(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


class StuckSink(Sink):
    """Never returns from `handle`: a peer that hangs forever."""

    name = "stuck"

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()

    async def handle(self, events: Sequence[Event]) -> None:
        self.entered.set()
        await asyncio.Event().wait()


class FailingSink(Sink):
    name = "failing"

    async def handle(self, events: Sequence[Event]) -> None:
        raise RuntimeError("boom")


def reading(n: int) -> Reading:
    return Reading.of("grid", Quantity.POWER, float(n), TS)


async def test_stuck_sink_blocks_neither_source_nor_other_sink() -> None:
    good, stuck = RecordingSink("good"), StuckSink()
    hub = Hub([good, stuck], queue_size=100)
    hub.start()
    hub.publish(reading(0))
    await asyncio.wait_for(stuck.entered.wait(), 1)
    for n in range(1, 1001):
        # never awaits: a source is never held up (a publish that waited on the stuck sink would
        # never return; shown by the loop ending and the counts below, not by a clock)
        hub.publish(reading(n))
        if n % 50 == 0:
            await asyncio.sleep(0)  # let the good sink run, as a real event loop would
    assert await hub.drain(0.5) is False  # the stuck sink never drains...
    assert [e.value for e in good.events if isinstance(e, Reading)] == [float(n) for n in range(1001)]
    # ...and what did not fit in its queue is dropped and counted, oldest first
    assert stuck.stats.dropped == 1000 - 100
    assert stuck.stats.queued == 100
    await hub.stop()


async def test_failing_sink_is_counted_and_the_hub_carries_on() -> None:
    good, failing = RecordingSink("good"), FailingSink()
    hub = Hub([failing, good])
    hub.start()
    for n in range(5):
        hub.publish(reading(n))
        await asyncio.sleep(0)
    assert await hub.drain(1.0)
    assert len(good.events) == 5
    assert failing.stats.errors["handle"] >= 1
    await hub.stop()


async def test_batches_preserve_order() -> None:
    sink = RecordingSink("s")
    hub = Hub([sink], queue_size=100_000)
    for n in range(5000):
        hub.publish(reading(n))
    hub.start()
    assert await hub.drain(2.0)
    assert [e.value for e in sink.events if isinstance(e, Reading)] == [float(n) for n in range(5000)]
    assert sink.stats.received == 5000
    await hub.stop()
