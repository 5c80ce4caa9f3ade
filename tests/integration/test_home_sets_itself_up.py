"""Issue 26's "done when": a new home with an EMU-2, a Zigbee2MQTT plug and a Shelly reaches a correct
Energy dashboard in the pinned Home Assistant, with no file edited and no variable set.

The bridge runs the release's default config untouched (only the broker address and password the
entrypoint fills in, and its data directory); the broker is the mqtt service's own entrypoint with
its ACL; Home Assistant runs the release's `hems` integration. The devices are what can run here:
the EMU-2 is a simulator on a pseudo-terminal listed in a fake sysfs as the kernel lists a
Rainforest stick (so the bridge finds it by its USB ids, as on the device); the Shelly is the
Shelly simulator logged in with its own provisioned identity; Zigbee2MQTT's messages are published
as its broker user (no Zigbee radio here).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from helpers.emu2_sim import Emu2Simulator
from helpers.homeassistant import REPO, HomeAssistant, state_of, until
from helpers.net import free_port
from helpers.release import ReleaseBroker, release_bridge_config
from helpers.shelly_sim import ShellySim
from integration.test_found_by_default import PLUG_IEEE, z2m_device
from meterbridge.app import Bridge

pytestmark = pytest.mark.homeassistant

PLUG = f"zigbee2mqtt_{PLUG_IEEE[2:]}"


async def test_a_new_home_reaches_a_correct_energy_dashboard(
    tmp_path: Path,
    home_broker: ReleaseBroker,
    emu2: Emu2Simulator,
    homeassistant_factory: Callable[..., HomeAssistant],
) -> None:
    shutil.copytree(REPO / "ha-config" / "custom_components", tmp_path / "homeassistant0" / "custom_components")
    ha = homeassistant_factory(mqtt=home_broker, mqtt_user="homeassistant", extra_yaml="energy:\nhems:\n")
    shelly = ShellySim("plus1pm")
    password = home_broker.add_shelly(shelly.device_id)
    shelly.mqtt_config["topic_prefix"] = f"shelly/{shelly.device_id}"  # as `meter-bridge shelly provision` sets it
    shelly.configure_mqtt(f"127.0.0.1:{home_broker.port}", shelly.device_id, password)
    await shelly.start()
    zigbee = aiomqtt.Client(
        "127.0.0.1", home_broker.port, username="zigbee2mqtt", password=home_broker.password("zigbee2mqtt")
    )
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(home_broker.port),
        "MQTT_PASSWORD": home_broker.password("bridge"),
        "BRIDGE_HEALTH_PORT": str(free_port()),
    }
    # the data volume in the test's directory, and no InfluxDB here (its sink is not what is tested)
    config = release_bridge_config(env, tmp_path / "data").model_copy(update={"influx": None})
    try:
        async with zigbee, Bridge(config) as bridge:
            devices = [
                {"ieee_address": "0x00124b0022aa0001", "type": "Coordinator", "friendly_name": "Coordinator"},
                z2m_device(PLUG_IEEE, "dishwasher", {"power": "W", "energy": "kWh"}),
            ]
            await zigbee.publish("zigbee2mqtt/bridge/devices", json.dumps(devices).encode(), qos=1, retain=True)
            z2m = bridge.stats.sources["zigbee2mqtt"]
            await until(lambda: asyncio.sleep(0, PLUG in z2m.meters), "the plug found", ha)
            await zigbee.publish("zigbee2mqtt/dishwasher", b'{"power":1850,"energy":230.5}')

            # the EMU-2 is the grid connection without anyone saying so
            async def grid_role() -> bool:
                return await state_of(ha, "select.hems_emu2_role") == "Grid connection"

            await until(grid_role, "the EMU-2 as the grid connection", ha)
            shelly_meters = bridge.stats.sources["shelly"].meters
            await until(lambda: asyncio.sleep(0, bool(shelly_meters)), "the Shelly found", ha)
            (shelly_meter,) = shelly_meters

            async def wired() -> dict[str, Any] | None:
                async with ha.websocket() as ws:
                    prefs = await ws.call("energy/get_prefs")
                devices = {d["stat_consumption"] for d in prefs["device_consumption"]}
                want = {f"sensor.hems_{PLUG}_energy_import", f"sensor.hems_{shelly_meter}_energy_import"}
                # the grid source gains its power sensor once the meter has reported power
                grids = [s for s in prefs["energy_sources"] if s["type"] == "grid" and "stat_rate" in s]
                return prefs if grids and want <= devices else None

            prefs = await until(wired, "the Energy dashboard wired", ha)
            (grid,) = prefs["energy_sources"]
            assert (grid["type"], grid["stat_energy_from"], grid["stat_energy_to"], grid["stat_rate"]) == (
                "grid",
                "sensor.hems_emu2_energy_import",
                "sensor.hems_emu2_energy_export",
                "sensor.hems_emu2_power_average",  # recorded (the live power is not)
            )
            assert len(prefs["device_consumption"]) == 2

            async def validated() -> tuple[list[dict[str, Any]]] | None:
                async with ha.websocket() as ws:
                    validation = await ws.call("energy/validate")
                groups = (*validation["energy_sources"], *validation["device_consumption"])
                problems = [p for group in groups for p in group]
                # only HA's first 5-minute statistics run is still to come for these new entities
                return (problems,) if {p["type"] for p in problems} <= {"statistics_not_defined"} else None

            try:
                await until(validated, "energy/validate clean", ha, timeout=30)
            except AssertionError:
                async with ha.websocket() as ws:
                    raise AssertionError(json.dumps(await ws.call("energy/validate"))) from None
            assert await state_of(ha, "sensor.hems_emu2_power") == "512.0"
    finally:
        await shelly.stop()
    assert not (tmp_path / "homeassistant0" / "packages").exists(), "no YAML written for the home"
