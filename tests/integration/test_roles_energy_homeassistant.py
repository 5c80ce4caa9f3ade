"""Roles chosen in the pinned Home Assistant wire its Energy dashboard (issue 26), with no YAML written.

The bridge runs the release's default config (meters found by default); Home Assistant runs with
the release's `hems` integration (ha-config/custom_components/hems) and MQTT. A Zigbee2MQTT plug
and a room sensor are announced on the broker the way Zigbee2MQTT does (no Zigbee radio here).
The role is chosen through HA's own `select.select_option` service; the Energy preferences are
read back with the websocket `energy/get_prefs`, and a hand-made change (`energy/save_prefs`)
must survive later role changes and restarts of both the bridge and HA.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.homeassistant import REPO, HomeAssistant, state_of, until
from helpers.mosquitto import Mosquitto
from helpers.mqtt import client_for
from integration.test_found_by_default import PLUG_IEEE, ROOM_IEEE, announce, default_config
from meterbridge.app import Bridge

pytestmark = pytest.mark.homeassistant

PLUG = f"zigbee2mqtt_{PLUG_IEEE[2:]}"
ROOM = f"zigbee2mqtt_{ROOM_IEEE[2:]}"
#: The release's dashboard entry (packages/hems.yaml), here without the rest of the package.
LOVELACE = """\
lovelace:
  dashboards:
    hems-energy:
      mode: yaml
      filename: dashboards/hems.yaml
      title: HEMS
"""
HANDMADE = {"stat_consumption": "sensor.kettle_energy", "name": "Kettle (by hand)"}


@pytest.fixture
def release_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(
        tmp_path / "mosquitto",
        users={"bridge": "bridge-pass-0123", "homeassistant": "ha-pass-0123456", "observer": "observer-pass-01"},
    )
    broker.start()
    yield broker
    broker.stop()


async def devices_in_prefs(ha: HomeAssistant) -> dict[str, dict[str, Any]]:
    async with ha.websocket() as ws:
        prefs = await ws.call("energy/get_prefs")
    return {d["stat_consumption"]: d for d in prefs["device_consumption"]}


async def test_roles_chosen_in_ha_wire_the_energy_dashboard(
    release_broker: Mosquitto, tmp_path: Path, homeassistant_factory: Callable[..., HomeAssistant]
) -> None:
    ha_dir = tmp_path / "homeassistant0"
    shutil.copytree(REPO / "ha-config" / "custom_components", ha_dir / "custom_components")
    ha = homeassistant_factory(mqtt=release_broker, mqtt_user="homeassistant", extra_yaml="energy:\nhems:\n" + LOVELACE)
    async with client_for(release_broker, "observer") as device:
        await announce(device)
        config = default_config(release_broker, tmp_path)
        energy, power = f"sensor.hems_{PLUG}_energy_import", f"sensor.hems_{PLUG}_power"
        recorded_power = f"{power}_average"  # what the recorder keeps: Energy's power, the graph's series
        select = f"select.hems_{PLUG}_role"
        async with Bridge(config) as bridge:
            z2m = bridge.stats.sources["zigbee2mqtt"]
            await until(lambda: asyncio.sleep(0, len(z2m.meters) == 2), "devices found", ha)
            await device.publish("zigbee2mqtt/heat pump plug", b'{"power":1520,"energy":101.2}')
            await device.publish("zigbee2mqtt/living room", b'{"temperature":20.5,"humidity":48}')
            # the plug and the room sensor appear in HA; the plug with its role select, proposed "Other device"
            await until(lambda: state_of(ha, energy), "the plug's energy sensor", ha)
            await until(lambda: state_of(ha, f"sensor.hems_{ROOM}_temperature"), "the room sensor", ha)
            await until(lambda: _state_is(ha, select, "Other device"), "the role select, proposed", ha)
            # ... and so it is an individual device on the Energy dashboard already
            found = await until(lambda: devices_in_prefs(ha), "the plug in the Energy prefs", ha)
            assert found[energy] == {"stat_consumption": energy, "stat_rate": recorded_power, "name": "heat pump plug"}

            # the householder adds a device by hand in the Energy dashboard's settings
            async with ha.websocket() as ws:
                prefs = await ws.call("energy/get_prefs")
                await ws.call("energy/save_prefs", device_consumption=[*prefs["device_consumption"], HANDMADE])

            async def choose(label: str) -> None:
                await ha.rest("POST", "/api/services/select/select_option", {"entity_id": select, "option": label})

            await choose("Ignore")
            await until(lambda: _without(ha, energy), "the ignored plug leaves the Energy prefs", ha)
            await choose("Heat pump")
            found = await until(lambda: _with(ha, energy), "the heat pump in the Energy prefs", ha)
            assert found[HANDMADE["stat_consumption"]] == HANDMADE, "the hand-made device survives role changes"
            # the room sensor measures no energy: never an Energy source or device
            assert not any(ROOM in stat for stat in found)

            # Zigbee2MQTT's own discovery announces the same plug: its power sensor is disabled
            # (one entity per quantity), its switch stays
            for component, prop in (("sensor", "power"), ("switch", "state")):
                z2m_entity = {
                    "name": prop.capitalize(),
                    "unique_id": f"{PLUG_IEEE}_{prop}_zigbee2mqtt",
                    "state_topic": "zigbee2mqtt/heat pump plug",
                    "value_template": f"{{{{ value_json.{prop} }}}}",
                    "device": {"identifiers": [f"zigbee2mqtt_{PLUG_IEEE}"], "name": "heat pump plug"},
                    **({"command_topic": "zigbee2mqtt/heat pump plug/set"} if component == "switch" else {}),
                }
                topic = f"homeassistant/{component}/{PLUG_IEEE}/{prop}/config"
                await device.publish(topic, json.dumps(z2m_entity).encode(), retain=True)

            async def z2m_registry() -> dict[str, Any] | None:
                async with ha.websocket() as ws:
                    entries = await ws.call("config/entity_registry/list")
                ours = {e["unique_id"]: e for e in entries if e["unique_id"].startswith(PLUG_IEEE)}
                return ours if len(ours) == 2 and ours[f"{PLUG_IEEE}_power_zigbee2mqtt"]["disabled_by"] else None

            entries = await until(z2m_registry, "Zigbee2MQTT's duplicate disabled", ha)
            assert entries[f"{PLUG_IEEE}_power_zigbee2mqtt"]["disabled_by"] == "integration"
            assert entries[f"{PLUG_IEEE}_state_zigbee2mqtt"]["disabled_by"] is None

            # the HEMS dashboard names what the home has, and only that (HA reads it as written)
            async def dashboard() -> set[str] | None:
                async with ha.websocket() as ws:
                    config = await ws.call("lovelace/config", url_path="hems-energy", force=True)
                named = set(dashboard_entities(config))
                wanted = {f"sensor.hems_{ROOM}_temperature", power, recorded_power}
                return named if wanted <= named else None

            named = await until(dashboard, "the HEMS dashboard", ha)
            states = {s["entity_id"] for s in await ha.rest("GET", "/api/states")}
            assert named <= states, f"cards naming entities HA does not have: {named - states}"
            # the householder edits it: a later role change leaves the file alone
            board = ha_dir / "dashboards" / "hems.yaml"
            edited = board.read_text() + "# my layout\n"
            board.write_text(edited)
            await choose("Ignore")  # would drop the plug from the dashboard
            await until(lambda: _without(ha, energy), "the ignored plug leaves the Energy prefs", ha)
            assert board.read_text() == edited
            await choose("Heat pump")
            await until(lambda: _with(ha, energy), "the heat pump back in the Energy prefs", ha)

        # a restart of HA and of the bridge keeps both the role and the hand-made device
        await asyncio.to_thread(ha.restart)
        async with Bridge(config):
            assert await until(lambda: _state_is(ha, select, "Heat pump"), "the role after restarts", ha)
            found = await devices_in_prefs(ha)
            assert set(found) == {energy, HANDMADE["stat_consumption"]}
            async with ha.websocket() as ws:
                validation = await ws.call("energy/validate")
            problems = {p["type"] for group in validation["device_consumption"] for p in group}
            # HA's first 5-minute statistics have not run for a new entity; the hand-made one has no entity
            assert problems <= {"statistics_not_defined", "entity_not_defined"}, validation


def dashboard_entities(node: Any) -> Iterator[str]:
    """Every entity a Lovelace config names."""
    if isinstance(node, dict):
        if isinstance(node.get("entity"), str):
            yield node["entity"]
        for value in node.values():
            yield from dashboard_entities(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_entities(item)


async def _with(ha: HomeAssistant, stat: str) -> dict[str, dict[str, Any]] | None:
    found = await devices_in_prefs(ha)
    return found if stat in found else None


async def _without(ha: HomeAssistant, stat: str) -> bool:
    return stat not in await devices_in_prefs(ha)


async def _state_is(ha: HomeAssistant, entity_id: str, wanted: str) -> bool:
    return await state_of(ha, entity_id) == wanted


async def test_the_name_entity_renames_the_device_in_ha(
    release_broker: Mosquitto, tmp_path: Path, homeassistant_factory: Callable[..., HomeAssistant]
) -> None:
    """The Name text renames the meter's HA device (MQTT discovery sent again with the new device
    name: every entity of the device says it), and the Energy dashboard's device name follows;
    emptied, the device's own name comes back."""
    ha_dir = tmp_path / "homeassistant0"
    shutil.copytree(REPO / "ha-config" / "custom_components", ha_dir / "custom_components")
    ha = homeassistant_factory(mqtt=release_broker, mqtt_user="homeassistant", extra_yaml="energy:\nhems:\n")
    async with client_for(release_broker, "observer") as device:
        await announce(device)
        config = default_config(release_broker, tmp_path)
        energy, text = f"sensor.hems_{PLUG}_energy_import", f"text.hems_{PLUG}_name"
        async with Bridge(config) as bridge:
            z2m = bridge.stats.sources["zigbee2mqtt"]
            await until(lambda: asyncio.sleep(0, len(z2m.meters) == 2), "devices found", ha)
            await device.publish("zigbee2mqtt/heat pump plug", b'{"power":1520,"energy":101.2}')
            await until(lambda: _state_is(ha, text, "heat pump plug"), "the Name entity", ha)

            async def device_name() -> str | None:
                async with ha.websocket() as ws:
                    devices = await ws.call("config/device_registry/list")
                names = [d["name"] for d in devices if [["mqtt", f"hems_home_{PLUG}"]] == d["identifiers"]]
                return names[0] if names else None

            async def named(wanted: str) -> bool:
                return await device_name() == wanted

            await until(lambda: named("heat pump plug"), "the device as Zigbee2MQTT names it", ha)
            await ha.rest("POST", "/api/services/text/set_value", {"entity_id": text, "value": "Dishwasher"})
            await until(lambda: named("Dishwasher"), "the device renamed", ha)
            found = await until(lambda: _with(ha, energy), "the plug in the Energy prefs", ha)
            await until(lambda: _energy_name_is(ha, energy, "Dishwasher"), "the Energy dashboard's name follows", ha)
            assert found[energy]["stat_consumption"] == energy
            # every entity of the device stays on the one device (no second device made by a name)
            async with ha.websocket() as ws:
                devices = await ws.call("config/device_registry/list")
            assert sum(1 for d in devices if d["identifiers"] == [["mqtt", f"hems_home_{PLUG}"]]) == 1
            await ha.rest("POST", "/api/services/text/set_value", {"entity_id": text, "value": " "})
            await until(lambda: named("heat pump plug"), "the device's own name back", ha)


async def _energy_name_is(ha: HomeAssistant, stat: str, name: str) -> bool:
    return (await devices_in_prefs(ha)).get(stat, {}).get("name") == name
