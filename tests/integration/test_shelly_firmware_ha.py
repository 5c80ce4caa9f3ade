"""The Shelly firmware `update` entity in the pinned Home Assistant (issue 21): the running bridge
announces one per device over MQTT discovery, HA shows the installed and the offered version, and
HA's own `update.install` reaches the simulated device, which comes back on the new build."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from helpers.homeassistant import HomeAssistant
from helpers.mosquitto import Mosquitto
from helpers.shelly_sim import ShellySim
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig

pytestmark = [pytest.mark.slow, pytest.mark.homeassistant]


async def wait_for_state(
    ha: HomeAssistant, entity_id: str, want: dict[str, Any], timeout: float = 60
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        states = {s["entity_id"]: s for s in await ha.rest("GET", "/api/states")}
        state = states.get(entity_id, {})
        seen = {"state": state.get("state"), **state.get("attributes", {})}
        if all(seen.get(k) == v for k, v in want.items()):
            return state
        await asyncio.sleep(0.3)
    raise AssertionError(f"{entity_id}: wanted {want}, have {state}\n{ha.tail_log()}")


async def test_update_entity_in_home_assistant_installs_on_the_device(
    broker: Mosquitto, base_topic: str, homeassistant_mqtt: HomeAssistant
) -> None:
    sim = ShellySim("plus1pm", mac="A8032AB1F00D")
    sim.mqtt_config["topic_prefix"] = f"shelly/{sim.device_id}"
    sim.configure_mqtt(f"{broker.host}:{broker.port}", "bridge", broker.password("bridge"))
    sim.offer("1.4.4")
    await sim.start()
    await sim.wait_connected()
    config = BridgeConfig.model_validate(
        {
            "site": {"id": "fw"},
            "mqtt": broker.bridge_mqtt(base_topic),
            "homeassistant": {"min_interval_s": 0.5},
            "health": {"enabled": False},
            "sources": [{"type": "shelly", "id": base_topic, "devices": [{"prefix": sim.prefix, "name": "Boiler"}]}],
        }
    )
    entity = f"update.hems_{base_topic}_shellyplus1pm_a8032ab1f00d_firmware"
    try:
        async with Bridge(config):
            state = await wait_for_state(
                homeassistant_mqtt, entity, {"state": "on", "installed_version": "1.3.3", "latest_version": "1.4.4"}
            )
            attributes = state["attributes"]
            assert attributes["device_class"] == "firmware"
            assert attributes["title"] == "Shelly firmware"
            async with homeassistant_mqtt.websocket() as ws:
                entry = next(e for e in await ws.call("config/entity_registry/list") if e["entity_id"] == entity)
                devices = {d["id"]: d for d in await ws.call("config/device_registry/list")}
            assert devices[entry["device_id"]]["name"] == "Boiler"  # the meter's device

            await homeassistant_mqtt.rest("POST", "/api/services/update/install", {"entity_id": entity})
            await wait_for_state(
                homeassistant_mqtt, entity, {"state": "off", "installed_version": "1.4.4", "in_progress": False}
            )
            # HA took every state we sent (it logs, and drops, a state that breaks its schema)
            log = homeassistant_mqtt.tail_log(100_000)
            assert not [line for line in log.splitlines() if "Schema violation" in line and base_topic in line]
            assert sim.updates == ["1.4.4"]
            assert sim.reboots == 1
            assert sim.version == "1.4.4"
    finally:
        await sim.stop()
