"""The pinned Home Assistant accepts the bridge's discovery: entities, classes, units, Energy dashboard."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from typing import Any

import pytest

from helpers.homeassistant import REPO, HomeAssistant
from helpers.mosquitto import Mosquitto
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig

pytestmark = pytest.mark.homeassistant


async def wait_for_states(ha: HomeAssistant, entity_ids: set[str], timeout: float = 30) -> dict[str, Any]:
    states: dict[str, Any] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        states = {s["entity_id"]: s for s in await ha.rest("GET", "/api/states")}
        if all(states.get(e, {}).get("state") not in (None, "unknown", "unavailable") for e in entity_ids):
            return states
        await asyncio.sleep(0.3)
    missing = {e: states.get(e, {}).get("state") for e in entity_ids}
    raise AssertionError(f"entities not ready: {missing}\n{ha.tail_log()}")


async def test_home_assistant_creates_energy_ready_sensors(
    broker: Mosquitto, base_topic: str, homeassistant_factory: Callable[..., HomeAssistant]
) -> None:
    ha = homeassistant_factory(mqtt=broker, extra_yaml="energy:\n")
    config = BridgeConfig.model_validate(
        {
            "site": {"id": "e2e"},
            "mqtt": broker.bridge_mqtt(base_topic),
            "homeassistant": {"min_interval_s": 0.5},
            "health": {"enabled": False},
            "sources": [
                {"type": "simulated", "id": "grid", "name": "Grid", "interval_s": 0.5, "pv_peak_w": 3000},
                {"type": "simulated", "id": "solar", "name": "Solar", "profile": "solar", "interval_s": 0.5},
            ],
        }
    )
    async with Bridge(config) as bridge:
        wanted = {
            "sensor.hems_grid_power",
            "sensor.hems_grid_energy_import",
            "sensor.hems_grid_energy_export",
            "sensor.hems_grid_voltage",
            "sensor.hems_solar_energy_export",
        }
        states = await wait_for_states(ha, wanted)
        power = states["sensor.hems_grid_power"]["attributes"]
        assert (power["device_class"], power["state_class"], power["unit_of_measurement"]) == (
            "power",
            "measurement",
            "W",
        )
        energy = states["sensor.hems_grid_energy_import"]["attributes"]
        assert (energy["device_class"], energy["state_class"], energy["unit_of_measurement"]) == (
            "energy",
            "total_increasing",
            "kWh",
        )
        assert energy["friendly_name"] == "Grid Energy import"
        float(states["sensor.hems_grid_power"]["state"])

        async with ha.websocket() as ws:
            # one HA device per meter, named after the meter, with our origin
            devices = await ws.call("config/device_registry/list")
            names = {d["name"] for d in devices if any(i[1].startswith("hems_e2e_") for i in d["identifiers"])}
            assert names == {"Grid", "Solar"}
            # wire the Energy dashboard to our entities and let HA validate them
            # as the release's hems integration wires a grid connection and solar (the pinned HA's
            # unified grid format)
            document = {
                "site": "e2e",
                "meters": [
                    {"id": "grid", "role": "grid", "quantities": ["energy_export", "energy_import", "power"]},
                    {"id": "solar", "role": "solar", "quantities": ["energy_export", "energy_import", "power"]},
                ],
            }
            sources, _ = hems_energy_prefs().wanted_entries(document, lambda unique_id: None)
            await ws.call("energy/save_prefs", energy_sources=sources)
            validation = await ws.call("energy/validate")
        problems = [p for group in validation["energy_sources"] for p in group]
        # `statistics_not_defined` only says HA's first 5-minute statistics run has not happened
        # yet for these new entities; every entity check (device class, unit, state class,
        # numeric, non-negative, recorded) is made regardless, and none may fail.
        assert {p["type"] for p in problems} <= {"statistics_not_defined"}, problems
        assert len(validation["energy_sources"]) == 2

        # the bridge goes away: HA shows its entities unavailable (availability = bridge AND meter)
        await bridge.shutdown()
        for _ in range(300):  # 60 s: a hang bound only
            state = (await ha.rest("GET", "/api/states/sensor.hems_grid_power"))["state"]
            if state == "unavailable":
                break
            await asyncio.sleep(0.2)
        assert state == "unavailable"


def hems_energy_prefs() -> Any:
    """The release's hems integration's pure part (ha-config/custom_components/hems/energy_prefs.py)."""
    path = REPO / "ha-config" / "custom_components" / "hems" / "energy_prefs.py"
    spec = importlib.util.spec_from_file_location("hems_energy_prefs", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
