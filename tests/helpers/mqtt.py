"""A test-side MQTT subscriber that records what the bridge publishes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from .mosquitto import Mosquitto


def client_for(broker: Mosquitto, user: str = "observer", **kwargs: Any) -> aiomqtt.Client:
    """An aiomqtt client for `broker` as `user`."""
    return aiomqtt.Client(broker.host, broker.port, username=user, password=broker.password(user), **kwargs)


@dataclass
class Recorder:
    """Collects every message on the subscribed topics; the latest per topic in `last`."""

    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    last: dict[str, bytes] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, topic: str, payload: bytes, retain: bool) -> None:
        self.messages.append((topic, payload, retain))
        self.last[topic] = payload
        self.changed.set()

    def json(self, topic: str) -> Any:
        """The latest payload on `topic`, decoded."""
        return json.loads(self.last[topic])

    async def wait_for(self, predicate: Callable[[Recorder], bool], timeout: float = 30.0) -> None:
        """Wait until `predicate(self)` is true; AssertionError after `timeout` (a hang bound: generous,
        a loaded machine is slow, and a test that passes never waits it out)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                topics = sorted(self.last)
                raise AssertionError(f"condition not met in {timeout} s; topics seen: {topics}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.2))


@contextlib.asynccontextmanager
async def recording(broker: Mosquitto, *topics: str, user: str = "observer"):  # type: ignore[no-untyped-def]
    """`async with recording(broker, "hems/#") as rec:` records until the block ends."""
    recorder = Recorder()
    async with client_for(broker, user) as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)

        async def pump() -> None:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
                recorder.add(str(message.topic), payload, bool(message.retain))

        task = asyncio.create_task(pump())
        try:
            yield recorder
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
