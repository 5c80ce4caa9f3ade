"""Meters found by default (issue 26) against a real Mosquitto, with the release's default config.

Zigbee2MQTT, Tasmota and a Glow CAD cannot run here (no radios, no devices): the test publishes
what they publish, in their documented shapes (tests/fixtures/tasmota/ for Tasmota's discovery
messages), on a broker of its own (the found families read fixed topics such as `zigbee2mqtt/#`,
which a shared broker would mix between tests). From the broker on everything is the real bridge.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from helpers.mosquitto import Mosquitto
from helpers.mqtt import Recorder, client_for, recording
from helpers.net import free_port
from helpers.release import release_bridge_config
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig

REPO = Path(__file__).resolve().parents[2]
TASMOTA = REPO / "tests" / "fixtures" / "tasmota"
PLUG_IEEE = "0xa4c1380000000001"
ROOM_IEEE = "0x00158d0000000002"


@pytest.fixture
async def device(own_broker: Mosquitto) -> AsyncIterator[Any]:
    async with client_for(own_broker, "observer") as client:
        yield client


def default_config(broker: Mosquitto, tmp_path: Path, **discovery: bool) -> BridgeConfig:
    """The release's first-boot config, as the entrypoint's environment fills it in."""
    env = {
        "MQTT_HOST": broker.host,
        "MQTT_PORT": str(broker.port),
        "MQTT_PASSWORD": broker.password("bridge"),
        "BRIDGE_HEALTH_PORT": str(free_port()),
    }
    config = release_bridge_config(env, tmp_path)
    assert config.discovery is not None
    found = config.discovery.model_copy(update={"roles_path": tmp_path / "meters.json", **discovery})
    # no InfluxDB here: its sink is not what is tested
    return config.model_copy(update={"influx": None, "discovery": found})


def z2m_device(ieee: str, name: str, props: dict[str, str]) -> dict[str, Any]:
    exposes = [{"type": "numeric", "name": p, "property": p, "access": 5, "unit": u} for p, u in props.items()]
    return {
        "ieee_address": ieee,
        "type": "Router",
        "friendly_name": name,
        "interview_completed": True,
        "definition": {"model": "TS011F_plug_1", "vendor": "Tuya", "description": "Smart plug", "exposes": exposes},
    }


async def announce(device: Any) -> None:
    """What a home's devices leave retained on the broker before the bridge starts."""
    await device.publish(
        "zigbee2mqtt/bridge/devices",
        json.dumps(
            [
                {"ieee_address": "0x00124b0022aa0001", "type": "Coordinator", "friendly_name": "Coordinator"},
                z2m_device(PLUG_IEEE, "heat pump plug", {"power": "W", "energy": "kWh"}),
                z2m_device(ROOM_IEEE, "living room", {"temperature": "°C", "humidity": "%"}),
                # a light switch: neither meters nor measures the room, so it is not read
                z2m_device("0x00158d0000000003", "hall switch", {"linkquality": "lqi"}),
            ]
        ).encode(),
        qos=1,
        retain=True,
    )
    mac = "A4CF12AB2A3B"
    for kind in ("config", "sensors"):
        payload = (TASMOTA / f"athom_plug.{kind}.json").read_bytes()
        await device.publish(f"tasmota/discovery/{mac}/{kind}", payload, qos=1, retain=True)


def discovered(rec: Recorder, meter: str, quantity: str) -> dict[str, Any] | None:
    topic = f"homeassistant/sensor/hems/hems_{meter}_{quantity}/config"
    return rec.json(topic) if rec.last.get(topic) else None


async def test_a_home_is_found_with_the_default_config(own_broker: Mosquitto, device: Any, tmp_path: Path) -> None:
    await announce(device)
    await device.publish("tele/athom_2A3B4C/LWT", b"Online", retain=True)
    config = default_config(own_broker, tmp_path)
    tasmota = "tasmota_a4cf12ab2a3b"
    async with recording(own_broker, "hems/#", "homeassistant/#") as rec, Bridge(config) as bridge:
        # every found family runs as a source of its own, named after the family
        assert sorted(bridge.stats.sources) == ["emu2", "glow", "shelly", "tasmota", "zigbee2mqtt"]
        z2m, found_tasmota = bridge.stats.sources["zigbee2mqtt"], bridge.stats.sources["tasmota"]
        await rec.wait_for(lambda r: len(z2m.meters) == 2 and tasmota in found_tasmota.meters)
        await device.publish("zigbee2mqtt/heat pump plug", b'{"power":1520,"energy":101.2}')
        await device.publish("zigbee2mqtt/living room", b'{"temperature":20.5,"humidity":48}')
        telemetry = json.loads((TASMOTA / "athom_plug.sensors.json").read_bytes())["sn"]
        await device.publish("tele/athom_2A3B4C/SENSOR", json.dumps(telemetry).encode())
        await rec.wait_for(lambda r: discovered(r, f"zigbee2mqtt_{PLUG_IEEE[2:]}", "energy_import") is not None)
        await rec.wait_for(lambda r: discovered(r, f"zigbee2mqtt_{ROOM_IEEE[2:]}", "temperature") is not None)
        await rec.wait_for(lambda r: discovered(r, tasmota, "power_factor") is not None)
        await rec.wait_for(lambda r: b"energy_import" in r.last.get(f"hems/meter/{tasmota}", b""))
        plug = discovered(rec, tasmota, "energy_import")
        assert plug is not None
        assert plug["device"]["name"] == "Dishwasher plug"
        assert plug["device"]["manufacturer"] == "Tasmota"
        assert rec.json(f"hems/meter/{tasmota}") | {"ts": None} == {
            "power": 512.0,
            "energy_import": 12.345,
            "voltage": 231.0,
            "current": 2.29,
            "power_factor": 0.97,
            "ts": None,
        }
        assert rec.last.get(f"hems/meter/{tasmota}/availability") == b"online"
        # the switch that meters nothing is not a meter
        assert not any("0x00158d0000000003"[2:] in topic for topic in rec.last)

        # the Glow CAD: found through its topics
        glow = {"electricitymeter": {"energy": {"import": {"cumulative": 6613.405, "units": "kWh"}}}}
        await device.publish("glow/E8DB84000001/SENSOR/electricitymeter", json.dumps(glow).encode())
        await rec.wait_for(lambda r: discovered(r, "glow_electricity", "energy_import") is not None)

        # the Tasmota plug withdraws its discovery: shown unavailable, never removed from HA
        await device.publish("tasmota/discovery/A4CF12AB2A3B/config", b"", qos=1, retain=True)
        await rec.wait_for(lambda r: r.last.get(f"hems/meter/{tasmota}/availability") == b"offline")
        removed = [t for t, payload, _ in rec.messages if t.startswith("homeassistant/") and payload == b""]
        assert removed == []
        assert bridge.stats.sources["emu2"].meters == {}, "no EMU-2 plugged in: no meter, nothing unavailable"


async def test_explicit_config_wins_and_a_family_can_be_off(own_broker: Mosquitto, device: Any, tmp_path: Path) -> None:
    await announce(device)
    config = default_config(own_broker, tmp_path, zigbee2mqtt=False)
    # the same Tasmota plug named explicitly, with the preset, under an id of the householder's
    explicit = {
        "type": "mqtt",
        "id": "plugs",
        "meters": [{"id": "dishwasher", "preset": "tasmota", "device": "athom_2A3B4C"}],
    }
    config = BridgeConfig.model_validate({**config.model_dump(), "sources": [explicit]})
    async with recording(own_broker, "hems/#", "homeassistant/#") as rec, Bridge(config) as bridge:
        assert "zigbee2mqtt" not in bridge.stats.sources
        await rec.wait_for(lambda r: "tasmota_a4cf12ab2a3b" not in bridge.stats.sources["tasmota"].meters)
        # retained here only so that it cannot arrive before the source subscribes
        await device.publish("tele/athom_2A3B4C/SENSOR", b'{"ENERGY":{"Power":77,"Total":12.5}}', retain=True)
        await rec.wait_for(lambda r: discovered(r, "dishwasher", "power") is not None)
        await device.publish("zigbee2mqtt/heat pump plug", b'{"power":1520,"energy":101.2}')
        await device.publish("tele/athom_2A3B4C/SENSOR", b'{"ENERGY":{"Power":78,"Total":12.5}}')
        await rec.wait_for(lambda r: b'"power":78.0' in r.last.get("hems/meter/dishwasher", b""))
        meters = {t.split("/")[2] for t in rec.last if t.startswith("hems/meter/")}
        assert meters == {"dishwasher"}, "the plug once, under its explicit id; no Zigbee device"
        assert bridge.stats.sources["tasmota"].meters == {}


async def test_roles_are_chosen_in_ha_and_kept(own_broker: Mosquitto, device: Any, tmp_path: Path) -> None:
    await announce(device)
    config = default_config(own_broker, tmp_path)
    plug = f"zigbee2mqtt_{PLUG_IEEE[2:]}"
    room = f"zigbee2mqtt_{ROOM_IEEE[2:]}"

    def document(rec: Recorder) -> dict[str, Any]:
        return {m["id"]: m for m in rec.json("hems/meters")["meters"]} if rec.last.get("hems/meters") else {}

    async with recording(own_broker, "hems/#", "homeassistant/#") as rec, Bridge(config) as bridge:
        z2m = bridge.stats.sources["zigbee2mqtt"]
        await rec.wait_for(lambda r: len(z2m.meters) == 2)
        await device.publish("zigbee2mqtt/heat pump plug", b'{"power":1520,"energy":101.2}')
        await device.publish("zigbee2mqtt/living room", b'{"temperature":20.5}')
        select = f"homeassistant/select/hems/hems_{plug}_role/config"
        await rec.wait_for(lambda r: r.last.get(select) is not None and r.last.get(f"hems/meter/{plug}/role"))
        entity = rec.json(select)
        assert entity["options"] == [
            "Grid connection",
            "Solar",
            "Battery",
            "EV charger",
            "Heat pump",
            "Other device",
            "Ignore",
        ]
        assert entity["command_topic"] == f"hems/meter/{plug}/role/set"
        assert entity["device"]["identifiers"] == [f"hems_home_{plug}"], "on the meter's own HA device"
        assert rec.last[f"hems/meter/{plug}/role"] == b"Other device", "proposed: a plug is a device"
        await rec.wait_for(lambda r: f"homeassistant/text/hems/hems_{plug}_name/config" in r.last)
        # the room sensor measures no energy: no role to choose
        assert f"homeassistant/select/hems/hems_{room}_role/config" not in rec.last
        await rec.wait_for(lambda r: "temperature" in document(r).get(room, {}).get("quantities", []))
        assert document(rec)[room]["role"] is None

        # the householder chooses in HA (what HA's MQTT select and text publish)
        await device.publish(f"hems/meter/{plug}/role/set", b"Heat pump")
        await device.publish(f"hems/meter/{plug}/name/set", b"Heat pump")
        await rec.wait_for(lambda r: document(r).get(plug, {}).get("role") == "heat_pump")
        await rec.wait_for(lambda r: r.last.get(f"hems/meter/{plug}/name") == b"Heat pump")
        assert bridge.stats.roles[plug] == {"role": "heat_pump", "name": "Heat pump", "type": "zigbee2mqtt"}
        # nonsense is refused and changes nothing
        await device.publish(f"hems/meter/{plug}/role/set", b"Nuclear reactor")

    kept = json.loads((tmp_path / "meters.json").read_text())
    assert kept["meters"][plug]["role"] == "heat_pump"

    # a restart (and an upgrade: only the data volume is kept) keeps the choice
    await device.publish("hems/meters", b"", retain=True)
    async with recording(own_broker, "hems/#") as rec, Bridge(config):
        await rec.wait_for(lambda r: document(r).get(plug, {}).get("role") == "heat_pump")
        assert document(rec)[plug]["name"] == "Heat pump"
        await rec.wait_for(lambda r: r.last.get(f"hems/meter/{plug}/role") == b"Heat pump")
