"""A home upgraded from an older Home Assistant keeps its entity ids on the pinned release.

The config dir is first run by Home Assistant 2024.3.3 (scripts/setup-ha-previous.sh; the newest
release that runs on Debian bookworm's Python, and older than 2025.10, where `object_id` was
deprecated) with the bridge announcing its meters and flex; the householder renames one entity.
Then the pinned release runs the same dir: the registry's ids, the renamed one included, stay as
they were and no entity appears a second time under a name-derived id.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from helpers.homeassistant import HASS, PINNED_VERSION, PREVIOUS_HASS, PREVIOUS_VERSION, HomeAssistant
from helpers.mosquitto import Mosquitto
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig

pytestmark = pytest.mark.homeassistant


def bridge_config(broker: Mosquitto, base_topic: str, tmp_path: Path) -> BridgeConfig:
    """Two meters and flex with one asset: sensors, a select, switches and buttons."""
    return BridgeConfig.model_validate(
        {
            "site": {"id": "upgrade"},
            "mqtt": broker.bridge_mqtt(base_topic),
            "homeassistant": {"min_interval_s": 0.5},
            "health": {"enabled": False},
            "sources": [
                {"type": "simulated", "id": "grid", "name": "Grid", "interval_s": 0.5, "pv_peak_w": 3000},
                {"type": "simulated", "id": "solar", "name": "Solar", "profile": "solar", "interval_s": 0.5},
            ],
            "flex": {
                "enabled": True,
                "site_meter_id": "grid",
                "state_path": str(tmp_path / "flex-state.json"),
                "assets": [
                    {
                        "id": "heat_pump",
                        "kind": "heat_pump",
                        "rated_power_w": 2500,
                        "meter_id": "grid",
                        "actuator": {"type": "mqtt", "command_topic": f"{base_topic}/hp/set"},
                    }
                ],
            },
        }
    )


async def registry(ha: HomeAssistant, expected: int, timeout: float = 60) -> dict[str, str]:
    """unique_id -> entity_id of the bridge's entities, once there are `expected` of them."""
    found: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        async with ha.websocket() as ws:
            entries: list[dict[str, Any]] = await ws.call("config/entity_registry/list")
        found = {e["unique_id"]: e["entity_id"] for e in entries if str(e["unique_id"]).startswith("hems_upgrade_")}
        if len(found) >= expected:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"{len(found)} of {expected} entities: {found}\n{ha.tail_log()}")


async def test_upgraded_home_keeps_its_entity_ids(tmp_path: Path, broker: Mosquitto, base_topic: str) -> None:
    if not PREVIOUS_HASS.exists():
        pytest.fail(f"{PREVIOUS_HASS} is missing: run `make setup-ha-previous`")
    config = bridge_config(broker, base_topic, tmp_path)
    ha = HomeAssistant(tmp_path / "config", mqtt=broker, hass=PREVIOUS_HASS)
    ha.start()
    try:
        assert ha.version == PREVIOUS_VERSION
        async with Bridge(config):
            before = await registry(ha, expected=12)
            assert before["hems_upgrade_grid_power"] == "sensor.hems_grid_power"
            assert before["hems_upgrade_hems_flex_heat_pump_allow"] == "switch.hems_flex_heat_pump_allow"
            async with ha.websocket() as ws:
                await ws.call(
                    "config/entity_registry/update",
                    entity_id="sensor.hems_solar_power",
                    new_entity_id="sensor.roof_pv_power",
                )
            before["hems_upgrade_solar_power"] = "sensor.roof_pv_power"
        ha.stop()

        ha.hass = HASS
        ha.start()
        assert ha.version == PINNED_VERSION
        async with Bridge(config):
            after = await registry(ha, expected=len(before))
            # let every discovery message of the bridge arrive before comparing
            await asyncio.sleep(3)
            after = await registry(ha, expected=len(before))
            states = {s["entity_id"] for s in await ha.rest("GET", "/api/states")}
        assert after == before
        assert "sensor.roof_pv_power" in states
        assert not {"sensor.grid_power", "sensor.solar_power", "sensor.hems_solar_power"} & states
    finally:
        ha.stop()
