"""The EMU-2's period usage, from a pseudo-terminal EMU-2 through the bridge to MQTT and the pinned HA.

`CurrentPeriodUsage` becomes an energy sensor HA takes as `state_class: total` with `last_reset` at
the period's start (`StartDate`), `LastPeriodUsage` an energy sensor without a state class, and the
start a timestamp sensor; HA's own statistics validation finds nothing wrong with them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.emu2_sim import Emu2Simulator
from helpers.homeassistant import HomeAssistant
from helpers.mosquitto import Mosquitto
from helpers.mqtt import recording
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig

PERIOD_START = 1_793_491_200  # 2026-11-01T00:00:00Z


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Emu2Simulator]:
    device = Emu2Simulator(tmp_path / "emu2")
    device.meter.period_kwh = 412.25
    device.meter.period_start = PERIOD_START
    device.meter.last_period_kwh = 903.5
    device.start()
    yield device
    device.stop()


def _config(broker: Mosquitto, base_topic: str, port: str, discovery_prefix: str) -> BridgeConfig:
    return BridgeConfig.model_validate(
        {
            "site": {"id": "test", "currency": "USD"},
            "mqtt": broker.bridge_mqtt(base_topic),
            "homeassistant": {"discovery_prefix": discovery_prefix, "min_interval_s": 0},
            "health": {"enabled": False},
            "sources": [{"type": "emu2", "id": "grid", "port": port, "demand_interval_s": 1, "period_interval_s": 1}],
        }
    )


async def test_period_usage_reaches_mqtt(broker: Mosquitto, base_topic: str, sim: Emu2Simulator) -> None:
    state_topic = f"{base_topic}/meter/grid"
    discovery = f"{base_topic}/ha/sensor/hems/hems_grid_energy_period/config"
    config = _config(broker, base_topic, sim.port, f"{base_topic}/ha")
    async with Bridge(config), recording(broker, f"{base_topic}/#") as rec:
        await rec.wait_for(
            lambda r: (
                state_topic in r.last
                and r.json(state_topic).get("energy_period") == 412.25
                and r.json(state_topic).get("energy_period_start") == PERIOD_START
                and r.json(state_topic).get("energy_last_period") == 903.5
            ),
            timeout=20,
        )
        await rec.wait_for(lambda r: discovery in r.last, timeout=30)
        entity = rec.json(discovery)
        assert (entity["device_class"], entity["state_class"], entity["unit_of_measurement"]) == (
            "energy",
            "total",
            "kWh",
        )
        assert "energy_period_start" in entity["last_reset_value_template"]
        # the period moves on (the user closed it on the device): the next poll shows it
        sim.meter.period_kwh, sim.meter.period_start = 1.5, PERIOD_START + 86400
        await rec.wait_for(lambda r: r.json(state_topic).get("energy_period_start") == PERIOD_START + 86400, timeout=30)
        assert rec.json(state_topic)["energy_period"] == 1.5
    assert "get_current_period_usage" in sim.commands
    assert "get_last_period_usage" in sim.commands


async def _states(ha: HomeAssistant, wanted: set[str], timeout: float = 40) -> dict[str, Any]:
    states: dict[str, Any] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        states = {s["entity_id"]: s for s in await ha.rest("GET", "/api/states")}
        ready = all(states.get(e, {}).get("state") not in (None, "unknown", "unavailable") for e in wanted)
        if ready and states["sensor.hems_grid_energy_period"]["attributes"].get("last_reset"):
            return states
        await asyncio.sleep(0.3)
    raise AssertionError(f"not ready: { {e: states.get(e) for e in wanted} }\n{ha.tail_log()}")


@pytest.mark.homeassistant
async def test_period_usage_entities_fit_home_assistants_rules(
    broker: Mosquitto, base_topic: str, sim: Emu2Simulator, homeassistant_factory: Callable[..., HomeAssistant]
) -> None:
    ha = homeassistant_factory(mqtt=broker)
    async with Bridge(_config(broker, base_topic, sim.port, "homeassistant")):
        wanted = {
            "sensor.hems_grid_energy_period",
            "sensor.hems_grid_energy_period_start",
            "sensor.hems_grid_energy_last_period",
        }
        states = await _states(ha, wanted)
        period = states["sensor.hems_grid_energy_period"]
        assert float(period["state"]) == 412.25
        attributes = period["attributes"]
        assert (attributes["device_class"], attributes["state_class"], attributes["unit_of_measurement"]) == (
            "energy",
            "total",
            "kWh",
        )
        assert attributes["last_reset"] == "2026-11-01T00:00:00+00:00"
        assert states["sensor.hems_grid_energy_period_start"]["state"] == "2026-11-01T00:00:00+00:00"
        last = states["sensor.hems_grid_energy_last_period"]
        assert float(last["state"]) == 903.5
        assert "state_class" not in last["attributes"], "a closed period's figure: no statistics"

        # a new period: HA follows last_reset
        sim.meter.period_kwh, sim.meter.period_start = 0.75, PERIOD_START + 86400
        for _ in range(300):  # 60 s: a hang bound only
            now = await ha.rest("GET", "/api/states/sensor.hems_grid_energy_period")
            if now["attributes"].get("last_reset") == "2026-11-02T00:00:00+00:00":
                break
            await asyncio.sleep(0.2)
        assert now["attributes"]["last_reset"] == "2026-11-02T00:00:00+00:00"
        assert float(now["state"]) == 0.75

        async with ha.websocket() as ws:
            issues = await ws.call("recorder/validate_statistics")
        ours = {entity: found for entity, found in issues.items() if entity.startswith("sensor.hems_grid_")}
        assert ours == {}, ours
    log = ha.tail_log(400)
    assert "Invalid last_reset" not in log, log
    assert "Invalid state message" not in log, log
