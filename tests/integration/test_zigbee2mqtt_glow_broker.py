"""zigbee2mqtt and glow sources against a real Mosquitto (with auth), end to end to the HA topics.

Zigbee2MQTT and the Glow CAD cannot run here (no Zigbee radio, no CAD): the test
publishes what they publish, in the documented shapes, as the broker user they would
use; everything from the broker on (sources, hub, HA sink) is the real bridge.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers.mosquitto import Mosquitto
from helpers.mqtt import Recorder, client_for, recording
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig

PLUG = "0xa4c1380000000001"
PLUG_METER = "z2m_a4c1380000000001"


def _config(broker: Mosquitto, base_topic: str, sources: list[dict[str, Any]]) -> BridgeConfig:
    return BridgeConfig.model_validate(
        {
            "site": {"id": "t"},
            "mqtt": broker.bridge_mqtt(base_topic),
            "homeassistant": {"discovery_prefix": f"{base_topic}_ha", "min_interval_s": 0},
            "health": {"enabled": False},
            "sources": sources,
        }
    )


def _device(ieee: str, name: str, props: dict[str, str]) -> dict[str, Any]:
    exposes = [{"type": "numeric", "name": p, "property": p, "access": 5, "unit": u} for p, u in props.items()]
    return {
        "ieee_address": ieee,
        "type": "Router",
        "supported": True,
        "disabled": False,
        "friendly_name": name,
        "software_build_id": "1.0.5",
        "interview_completed": True,
        "definition": {"model": "TS011F_plug_1", "vendor": "Tuya", "description": "Smart plug", "exposes": exposes},
    }


def _devices(*devices: dict[str, Any]) -> bytes:
    coordinator = {"ieee_address": "0x00124b0022aa0001", "type": "Coordinator", "friendly_name": "Coordinator"}
    return json.dumps([coordinator, *devices]).encode()


@pytest.fixture
async def publisher(broker: Mosquitto) -> AsyncIterator[Any]:
    async with client_for(broker, "observer") as client:
        yield client


def _state(rec: Recorder, topic: str) -> dict[str, Any]:
    return rec.json(topic) if topic in rec.last else {}


async def test_zigbee2mqtt_devices_rename_availability_and_totals(
    broker: Mosquitto, base_topic: str, publisher: Any
) -> None:
    z2m = f"{base_topic}_z2m"
    plug_props = {"power": "W", "energy": "kWh", "voltage": "V", "current": "A"}
    # Zigbee2MQTT publishes the device list retained before the bridge starts
    await publisher.publish(
        f"{z2m}/bridge/devices",
        _devices(
            _device(PLUG, "kitchen/dishwasher plug", plug_props),
            {
                "ieee_address": "0x00158d0000000002",
                "type": "EndDevice",
                "friendly_name": "hall/temperature",
                "definition": {"exposes": [{"type": "numeric", "property": "temperature", "unit": "°C"}]},
            },
        ),
        qos=1,
        retain=True,
    )
    config = _config(broker, base_topic, [{"type": "zigbee2mqtt", "id": "z2m", "base_topic": z2m}])
    state_topic = f"{base_topic}/meter/{PLUG_METER}"
    async with recording(broker, f"{base_topic}/#", f"{base_topic}_ha/#") as rec, Bridge(config) as bridge:
        stats = bridge.stats.sources["z2m"]
        await rec.wait_for(lambda r: stats.meters.get(PLUG_METER) is not None, 10)
        # the room sensor is read too (issue 20: retrofit evaluation), as its own meter
        assert sorted(stats.meters) == sorted([PLUG_METER, "z2m_00158d0000000002"])
        # a friendly name with a slash: its state topic is found by exact name
        plug_topic = f"{z2m}/kitchen/dishwasher plug"
        await publisher.publish(plug_topic, b'{"power":87,"energy":12.34,"voltage":239,"current":0.41,"state":"ON"}')
        await rec.wait_for(lambda r: _state(r, state_topic).get("power") == 87.0)
        assert rec.json(state_topic)["energy_import"] == 12.34
        discovery = rec.json(f"{base_topic}_ha/sensor/hems/hems_{PLUG_METER}_energy_import/config")
        assert discovery["device"]["name"] == "kitchen/dishwasher plug"
        assert (discovery["device_class"], discovery["state_class"]) == ("energy", "total_increasing")

        # availability in Zigbee2MQTT 2.x's JSON form
        avail_topic = f"{base_topic}/meter/{PLUG_METER}/availability"
        await publisher.publish(f"{plug_topic}/availability", b'{"state":"offline"}', retain=True)
        await rec.wait_for(lambda r: r.last.get(avail_topic) == b"offline")
        await publisher.publish(f"{plug_topic}/availability", b'{"state":"online"}', retain=True)
        await rec.wait_for(lambda r: r.last.get(avail_topic) == b"online")

        # the total steps back a little: ignored, HA keeps seeing 12.34
        await publisher.publish(plug_topic, b'{"power":90,"energy":12.31}')
        await rec.wait_for(lambda r: _state(r, state_topic).get("power") == 90.0)
        assert rec.json(state_topic)["energy_import"] == 12.34
        assert stats.errors["total_step_back"] == 1

        # renamed at run time: Zigbee2MQTT publishes a new device list
        await publisher.publish(
            f"{z2m}/bridge/devices",
            _devices(_device(PLUG, "utility/dishwasher", plug_props)),
            qos=1,
            retain=True,
        )
        await rec.wait_for(
            lambda r: (
                r.json(f"{base_topic}_ha/sensor/hems/hems_{PLUG_METER}_power/config")["device"]["name"]
                == "utility/dishwasher"
            )
        )
        await publisher.publish(plug_topic, b'{"power":1,"energy":99}')  # the old topic: no longer read
        new_topic = f"{z2m}/utility/dishwasher"
        await publisher.publish(new_topic, b'{"power":120,"energy":12.5}')
        await rec.wait_for(lambda r: _state(r, state_topic).get("power") == 120.0)
        assert rec.json(state_topic)["energy_import"] == 12.5

        # a lone drop to 0 (a reboot glitch) is held; the meter comes back: no reset
        await publisher.publish(new_topic, b'{"power":121,"energy":0}')
        await publisher.publish(new_topic, b'{"power":122,"energy":12.51}')
        await rec.wait_for(lambda r: _state(r, state_topic).get("power") == 122.0)
        energies = [json.loads(p).get("energy_import") for t, p, _ in rec.messages if t == state_topic]
        assert 0.0 not in energies
        assert rec.json(state_topic)["energy_import"] == 12.51

        # a real reset: the counter falls and counts up from its new low; the total continues
        # from 12.51 (issue 25: a restarted counter is neither lost nor counted twice)
        await publisher.publish(new_topic, b'{"power":130,"energy":0.0}')
        await publisher.publish(new_topic, b'{"power":131,"energy":0.01}')
        await rec.wait_for(lambda r: _state(r, state_topic).get("power") == 131.0)
        assert rec.json(state_topic)["energy_import"] == 12.52
        assert stats.errors["total_reset"] == 1
        energies = [json.loads(p).get("energy_import") for t, p, _ in rec.messages if t == state_topic]
        # HA's view: never a drop
        drops = [(a, b) for a, b in itertools.pairwise(energies) if b < a]
        assert drops == []

        # bad JSON is counted, the source carries on
        await publisher.publish(new_topic, b"{not json")
        await publisher.publish(new_topic, b'{"power":140,"energy":0.02}')
        await rec.wait_for(lambda r: _state(r, state_topic).get("power") == 140.0)
        assert stats.errors["parse"] == 1

        # removed from Zigbee2MQTT: the meter goes unavailable
        await publisher.publish(f"{z2m}/bridge/devices", _devices(), qos=1, retain=True)
        await rec.wait_for(lambda r: r.last.get(avail_topic) == b"offline")
    await publisher.publish(f"{z2m}/bridge/devices", b"", retain=True)


async def test_zigbee2mqtt_follows_a_broker_restart(own_broker: Mosquitto, base_topic: str) -> None:
    z2m = f"{base_topic}_z2m"
    config = _config(own_broker, base_topic, [{"type": "zigbee2mqtt", "id": "z2m", "base_topic": z2m}])
    state_topic = f"{base_topic}/meter/{PLUG_METER}"
    async with Bridge(config) as bridge:
        for attempt in range(2):
            async with client_for(own_broker, "observer") as pub, recording(own_broker, f"{base_topic}/#") as rec:
                # the broker has no persistence: Zigbee2MQTT re-publishes its list after reconnecting
                await pub.publish(f"{z2m}/bridge/devices", _devices(_device(PLUG, "a/b", {"power": "W"})), retain=True)
                await rec.wait_for(lambda r: bridge.stats.sources["z2m"].meters.get(PLUG_METER) is not None, 15)
                want = 10.0 + attempt
                for _ in range(60):
                    await pub.publish(f"{z2m}/a/b", json.dumps({"power": want}).encode())
                    try:
                        await rec.wait_for(lambda r, want=want: _state(r, state_topic).get("power") == want, 0.5)
                        break
                    except AssertionError:
                        continue
                assert rec.json(state_topic)["power"] == want
            if attempt == 0:
                own_broker.restart()


GLOW_ELEC = (
    '{{"electricitymeter":{{"timestamp":"{ts}","energy":{{"export":{{"cumulative":0.000,"units":"kWh"}},'
    '"import":{{"cumulative":{imp},"day":10.464,"week":85.675,"month":512.937,"units":"kWh","mpan":"1200012345678",'
    '"supplier":"Octopus Energy","price":{{"unitrate":0.30000,"standingcharge":0.44570}}}}}},'
    '"power":{{"value":{kw},"units":"kW"}}}}}}'
)
GLOW_GAS = (
    '{{"gasmeter":{{"timestamp":"{ts}","energy":{{"export":{{"cumulative":0.000,"units":"kWh"}},'
    '"import":{{"cumulative":{imp},"day":0.000,"week":9.781,"month":87.295,"units":"kWh","mprn":"EMPTY",'
    '"supplier":"---","price":{{"unitrate":0.07276,"standingcharge":0.26110}}}}}},"power":{{"value":0.000,"units":"kW"}}}}}}'
)


async def test_glow_sentinels_kw_units_and_gas(broker: Mosquitto, base_topic: str, publisher: Any) -> None:
    prefix = f"{base_topic}_glow"
    cad = "E8DB84000001"
    config = _config(broker, base_topic, [{"type": "glow", "id": "smart", "topic_prefix": prefix}])
    elec_topic, gas_topic = f"{base_topic}/meter/smart_electricity", f"{base_topic}/meter/smart_gas"
    sensor = f"{prefix}/{cad}/SENSOR"
    async with recording(broker, f"{base_topic}/#", f"{base_topic}_ha/#") as rec, Bridge(config) as bridge:
        stats = bridge.stats.sources["smart"]
        for _ in range(300):  # until the source has subscribed (60 s: a hang bound)
            await publisher.publish(
                f"{sensor}/electricitymeter", GLOW_ELEC.format(ts="2026-11-21T20:00:00Z", imp=4595.563, kw=0.623)
            )
            try:
                await rec.wait_for(lambda r: elec_topic in r.last, 0.2)
                break
            except AssertionError:
                continue
        state = rec.json(elec_topic)
        assert state["power"] == 623.0  # kW -> W
        assert (state["energy_import"], state["price"], state["standing_charge"]) == (4595.563, 0.3, 0.4457)
        assert state["ts"] == "2026-11-21T20:00:00+00:00"

        # the meter's error sentinel: dropped and counted, never published
        await publisher.publish(
            f"{sensor}/electricitymeter", GLOW_ELEC.format(ts="2026-11-21T20:00:10Z", imp=-8388.608, kw=-8388.608)
        )
        await rec.wait_for(lambda r: stats.errors["sentinel"] == 2)
        await publisher.publish(
            f"{sensor}/electricitymeter", GLOW_ELEC.format(ts="2026-11-21T20:00:20Z", imp=4595.570, kw=1.2)
        )
        await rec.wait_for(lambda r: _state(r, elec_topic).get("power") == 1200.0)
        published = [json.loads(p) for t, p, _ in rec.messages if t == elec_topic]
        assert all(-8388.608 not in s.values() and -8388608.0 not in s.values() for s in published)
        assert rec.json(elec_topic)["energy_import"] == 4595.57

        # gas, in kWh, ready for the Energy dashboard
        await publisher.publish(f"{sensor}/gasmeter", GLOW_GAS.format(ts="2026-11-21T19:30:00Z", imp=6728.026))
        await rec.wait_for(lambda r: _state(r, gas_topic).get("gas_energy") == 6728.026)
        assert rec.json(gas_topic)["price"] == 0.07276
        discovery = rec.json(f"{base_topic}_ha/sensor/hems/hems_smart_gas_gas_energy/config")
        assert discovery["device_class"] == "energy"
        assert discovery["state_class"] == "total_increasing"
        assert discovery["unit_of_measurement"] == "kWh"
        charge = rec.json(f"{base_topic}_ha/sensor/hems/hems_smart_electricity_standing_charge/config")
        assert (charge["device_class"], charge["unit_of_measurement"]) == ("monetary", "GBP/day")

        # the CAD leaves the meters' network: both meters unavailable
        await publisher.publish(f"{prefix}/{cad}/STATE", b'{"software":"v1.8.12","han":{"status":"rejoining"}}')
        await rec.wait_for(lambda r: r.last.get(f"{gas_topic}/availability") == b"offline")
        assert rec.last.get(f"{elec_topic}/availability") == b"offline"
        # a second CAD on the same broker is ignored (and counted)
        await publisher.publish(
            f"{prefix}/OTHERCAD/SENSOR/electricitymeter", GLOW_ELEC.format(ts="2026-11-21T20:01:00Z", imp=1, kw=9)
        )
        await rec.wait_for(lambda r: stats.errors["other_device"] == 1)
        assert rec.json(elec_topic)["power"] == 1200.0
