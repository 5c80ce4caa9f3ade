"""Bounded fan-out from sources to sinks.

Every sink has its own queue and its own consumer task, so a stuck or slow sink
never blocks a source (publishing never waits) or another sink. When a sink's queue
is full the oldest event is dropped and counted in that sink's stats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from .logutil import RateLimitedLog
from .model import Event
from .sinks import Sink

_LOGGER = logging.getLogger(__name__)

#: Most events handed to a sink in one `handle` call.
MAX_BATCH = 1000


class _SinkQueue:
    def __init__(self, sink: Sink, maxsize: int) -> None:
        self.sink = sink
        self.maxsize = maxsize
        self.items: deque[Event] = deque()
        self.ready = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.task: asyncio.Task[None] | None = None


class Hub:
    """Fan-out of events to sinks; `publish` never blocks."""

    def __init__(self, sinks: list[Sink], queue_size: int = 10_000) -> None:
        self._queues = [_SinkQueue(sink, queue_size) for sink in sinks]
        self._log = RateLimitedLog(_LOGGER)

    @property
    def sinks(self) -> list[Sink]:
        """The sinks fed by this hub."""
        return [queue.sink for queue in self._queues]

    def publish(self, event: Event) -> None:
        """Queue `event` for every sink; drops (and counts) the oldest when a queue is full."""
        for queue in self._queues:
            if len(queue.items) >= queue.maxsize:
                queue.items.popleft()
                queue.sink.stats.dropped += 1
                self._log.log(
                    logging.WARNING,
                    f"drop:{queue.sink.name}",
                    "Sink %s is not keeping up: its queue of %d is full, dropping the oldest events",
                    queue.sink.name,
                    queue.maxsize,
                )
            queue.items.append(event)
            queue.sink.stats.queued = len(queue.items)
            queue.idle.clear()
            queue.ready.set()

    def start(self) -> None:
        """Start one consumer task per sink."""
        for queue in self._queues:
            queue.task = asyncio.create_task(self._consume(queue), name=f"hub-sink-{queue.sink.name}")

    async def _consume(self, queue: _SinkQueue) -> None:
        while True:
            await queue.ready.wait()
            batch: list[Event] = []
            while queue.items and len(batch) < MAX_BATCH:
                batch.append(queue.items.popleft())
            queue.sink.stats.queued = len(queue.items)
            if not queue.items:
                queue.ready.clear()
            if batch:
                try:
                    await queue.sink.handle(batch)
                    queue.sink.stats.received += len(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # a failing sink must never take the hub down
                    queue.sink.stats.errors["handle"] += 1
                    self._log.log(logging.ERROR, f"fail:{queue.sink.name}", "Sink %s failed: %r", queue.sink.name, err)
            if not queue.items:
                queue.idle.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until every queue is empty and handled; False when `timeout` ran out."""
        waits = [asyncio.ensure_future(queue.idle.wait()) for queue in self._queues]
        if not waits:
            return True
        _done, pending = await asyncio.wait(waits, timeout=timeout)
        for task in pending:
            task.cancel()
        return not pending

    async def stop(self) -> None:
        """Cancel the consumer tasks (call `drain` first to deliver what is queued)."""
        tasks = [queue.task for queue in self._queues if queue.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
