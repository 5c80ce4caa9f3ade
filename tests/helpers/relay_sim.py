"""A relay simulator on the real broker for the flex MQTT command-topic actuator.

Each relay listens on `<base>/relay/<id>/command` (`ON`/`OFF`), reports on
`<base>/relay/<id>/state` and keeps a timeline of (monotonic time, on) for assertions.
Site import is `base_w` plus the rated power of every relay that is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiomqtt

from .mosquitto import Mosquitto
from .mqtt import client_for


@dataclass
class SimRelay:
    """One simulated relay."""

    relay_id: str
    power_w: float
    on: bool = True
    timeline: list[tuple[float, bool]] = field(default_factory=list)


@dataclass
class RelaySim:
    """A set of relays behind one MQTT client."""

    base: str
    relays: dict[str, SimRelay]
    base_w: float = 500.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def command_topic(self, relay_id: str) -> str:
        return f"{self.base}/relay/{relay_id}/command"

    def state_topic(self, relay_id: str) -> str:
        return f"{self.base}/relay/{relay_id}/state"

    @property
    def site_w(self) -> float:
        return self.base_w + sum(r.power_w for r in self.relays.values() if r.on)

    async def wait(self, relay_id: str, on: bool, timeout: float) -> float:
        """Wait until `relay_id` is `on`; the monotonic time it switched."""
        deadline = time.monotonic() + timeout
        relay = self.relays[relay_id]
        while relay.on != on:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"relay {relay_id} not {'on' if on else 'off'} after {timeout} s")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.2))
        return relay.timeline[-1][0] if relay.timeline else time.monotonic()


@contextlib.asynccontextmanager
async def relay_sim(broker: Mosquitto, base: str, powers: dict[str, float]) -> AsyncIterator[RelaySim]:
    """Run the simulator until the block ends."""
    sim = RelaySim(base, {k: SimRelay(k, v) for k, v in powers.items()})
    async with client_for(broker, "observer") as client:
        await client.subscribe(f"{base}/relay/+/command", qos=1)

        async def pump() -> None:
            async for message in client.messages:
                relay_id = str(message.topic).split("/")[-2]
                relay = sim.relays.get(relay_id)
                payload = message.payload if isinstance(message.payload, bytes) else b""
                if relay is None or payload not in (b"ON", b"OFF"):
                    continue
                relay.on = payload == b"ON"
                relay.timeline.append((time.monotonic(), relay.on))
                sim.changed.set()
                await client.publish(sim.state_topic(relay_id), payload, qos=1)

        task = asyncio.create_task(pump())
        try:
            yield sim
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
