"""Chaos: the EMU-2's USB cable pulled and plugged back again and again (a pseudo-terminal
simulator behind a symlink, as /dev/serial/by-id on the appliance): the bridge must notice
every unplug (meter offline) and recover on every replug with fresh values (asserted on MQTT)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.emu2_sim import Emu2Simulator
from helpers.figures import record as record_figure
from helpers.figures import scale
from helpers.mosquitto import Mosquitto
from helpers.mqtt import recording
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig

CYCLES = scale(3, 20)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Emu2Simulator]:
    device = Emu2Simulator(tmp_path / "emu2")
    device.start()
    yield device
    device.stop()


def _power(rec: Any, topic: str) -> float | None:
    return rec.json(topic).get("power") if topic in rec.last else None


@pytest.mark.slow
async def test_unplug_replug_recovers_every_time(
    broker: Mosquitto, base_topic: str, sim: Emu2Simulator, request: pytest.FixtureRequest
) -> None:
    config = BridgeConfig.model_validate(
        {
            "mqtt": broker.bridge_mqtt(base_topic),
            "homeassistant": {"discovery_prefix": f"{base_topic}/ha", "min_interval_s": 0},
            "health": {"enabled": False},
            "sources": [{"type": "emu2", "id": "grid", "port": sim.port, "demand_interval_s": 1}],
        }
    )
    state = f"{base_topic}/meter/grid"
    availability = f"{state}/availability"
    recover_s: list[float] = []
    async with Bridge(config), recording(broker, f"{base_topic}/#") as rec:
        await rec.wait_for(lambda r: r.last.get(availability) == b"online", timeout=30)
        for cycle in range(CYCLES):
            sim.unplug()
            await rec.wait_for(lambda r: r.last.get(availability) == b"offline", timeout=15)
            sim.meter.demand_w = 1000.0 + cycle  # a value only this cycle's device reports
            sim.replug()
            plugged = time.monotonic()
            await rec.wait_for(
                lambda r, c=cycle: r.last.get(availability) == b"online" and _power(r, state) == 1000.0 + c,
                timeout=60,
            )
            recover_s.append(time.monotonic() - plugged)
    record_figure(
        "chaos_serial",
        area="Chaos",
        check=f"EMU-2 serial device (pty) unplugged and replugged {CYCLES} times",
        goal="recovers every time",
        measured=(
            f"recovered {len(recover_s)}/{CYCLES} times; fresh values {min(recover_s):.1f}-{max(recover_s):.1f} s "
            f"(median {sorted(recover_s)[len(recover_s) // 2]:.1f} s) after the replug"
        ),
        ok=len(recover_s) == CYCLES,
        test=request.node.nodeid,
    )
    assert len(recover_s) == CYCLES
