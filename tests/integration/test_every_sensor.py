"""Issue 20's "done when": a Tasmota user, a retrofit-evaluation deployment and a SenseLink user
each get from their set-up to readings in Home Assistant (the pinned release, over MQTT
discovery) and InfluxDB (VictoriaMetrics' v2 write API) with the one config block or command
the README documents.

The README's blocks are read from the README itself (`<!-- example: NAME -->` before a YAML
fence), so the documented block is the tested one. Tasmota, the heat-pump controller and
Zigbee2MQTT cannot run here: the test publishes what they publish, in their documented shapes
(tests/fixtures/mqtt/, tests/fixtures/zigbee2mqtt/). The SenseLink user's plugs are then read
by python-kasa, a real Kasa client, which must see the MACs and device ids Sense saw.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kasa import Discover, Module

from helpers.homeassistant import HomeAssistant
from helpers.mosquitto import Mosquitto
from helpers.mqtt import client_for
from helpers.net import free_port
from helpers.victoria import Series, Victoria, sample_count
from meterbridge.app import Bridge
from meterbridge.cli import main
from meterbridge.config import BridgeConfig, load_config

pytestmark = pytest.mark.homeassistant

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def readme_block(name: str) -> str:
    """The YAML block the README documents under `<!-- example: name -->`."""
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- example: {name} -->\n```yaml\n(.*?)```", text, re.DOTALL)
    assert match, f"README has no example {name!r}"
    return match.group(1)


def bridge_settings(broker: Mosquitto, victoria: Victoria, tmp_path: Path, site: str, base: str) -> dict[str, Any]:
    """Everything but `sources`: the test's broker (HA's discovery prefix), VictoriaMetrics, a spool."""
    return {
        "site": {"id": site},
        "mqtt": broker.bridge_mqtt(base),
        "homeassistant": {"min_interval_s": 0},
        "health": {"enabled": False},
        "influx": {"url": victoria.url, "org": "hems", "bucket": "meters", "token": "victoria-ignores-it"},
        "spool": {"path": str(tmp_path / "spool.sqlite")},
    }


def _matches(state: str | None, value: str) -> bool:
    """A state equals `value`, compared as numbers when both are (HA shows 56 as `56.0`)."""
    try:
        return state is not None and abs(float(state) - float(value)) < 1e-6
    except ValueError:
        return state == value


async def has_state(ha: HomeAssistant, entity_id: str, value: str) -> bool:
    """Whether `entity_id`'s state is `value` now."""
    states = {s["entity_id"]: s["state"] for s in await ha.rest("GET", "/api/states")}
    return _matches(states.get(entity_id), value)


async def wait_for_states(ha: HomeAssistant, wanted: dict[str, str], timeout: float = 40) -> dict[str, Any]:
    """HA's states once every entity in `wanted` has that state (compared as numbers when numeric)."""
    states: dict[str, Any] = {}

    def matches(entity_id: str, value: str) -> bool:
        return _matches(states.get(entity_id, {}).get("state"), value)

    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        states = {s["entity_id"]: s for s in await ha.rest("GET", "/api/states")}
        if all(matches(e, v) for e, v in wanted.items()):
            return states
        await asyncio.sleep(0.3)
    seen = {e: states.get(e, {}).get("state") for e in wanted}
    raise AssertionError(f"HA states not reached: want {wanted}, have {seen}\n{ha.tail_log()}")


def classes(states: dict[str, Any], entity_id: str) -> tuple[str | None, str | None, str | None]:
    attributes = states[entity_id]["attributes"]
    return attributes.get("device_class"), attributes.get("state_class"), attributes.get("unit_of_measurement")


async def points(victoria: Victoria, name: str, meter: str) -> list[Series]:
    """The series `name` of `meter` once it has a sample (VictoriaMetrics names them `<measurement>_<field>`)."""
    match = f'{{__name__="{name}",meter="{meter}"}}'
    series = await asyncio.to_thread(victoria.export, match, lambda s: sample_count(s) >= 1, 30.0)
    assert series, f"no {name} for {meter} in VictoriaMetrics"
    return series


async def publish_until(client: Any, topic: str, payload: bytes, done: Any, attempts: int = 60) -> None:
    """Publish until `done()` holds: the bridge may not have subscribed yet (nothing here is retained)."""
    for _ in range(attempts):
        await client.publish(topic, payload, qos=1)
        await asyncio.sleep(0.5)
        if await done():
            return
    raise AssertionError(f"{topic}: never taken in")


async def test_tasmota_user(
    broker: Mosquitto, homeassistant_mqtt: HomeAssistant, victoria: Victoria, tmp_path: Path, base_topic: str
) -> None:
    block = yaml.safe_load(readme_block("tasmota"))
    device = f"{base_topic}_washer"
    block["sources"][0]["meters"][0]["device"] = device  # one broker serves the whole session
    config = BridgeConfig.model_validate({**bridge_settings(broker, victoria, tmp_path, "tas", base_topic), **block})
    ha = homeassistant_mqtt
    async with Bridge(config), client_for(broker) as tasmota:
        await tasmota.publish(f"tele/{device}/LWT", b"Online", qos=1, retain=True)
        payload = (FIXTURES / "mqtt" / "tasmota_pow.payload").read_bytes()

        await publish_until(
            tasmota, f"tele/{device}/SENSOR", payload, lambda: has_state(ha, "sensor.hems_washing_machine_power", "56")
        )
        states = await wait_for_states(
            ha, {"sensor.hems_washing_machine_power": "56", "sensor.hems_washing_machine_energy_import": "514.153"}
        )
        assert classes(states, "sensor.hems_washing_machine_power") == ("power", "measurement", "W")
        assert classes(states, "sensor.hems_washing_machine_energy_import") == ("energy", "total_increasing", "kWh")
        series = await points(victoria, "mqtt_power", "washing_machine")
        assert series[0].values[-1] == 56.0
        assert series[0].labels["site"] == "tas"
        # the device's last will makes it unavailable in HA
        await tasmota.publish(f"tele/{device}/LWT", b"Offline", qos=1, retain=True)
        await wait_for_states(ha, {"sensor.hems_washing_machine_power": "unavailable"})
        await tasmota.publish(f"tele/{device}/LWT", b"", retain=True)


async def test_retrofit_evaluation(
    broker: Mosquitto, homeassistant_mqtt: HomeAssistant, victoria: Victoria, tmp_path: Path, base_topic: str
) -> None:
    """A Zigbee2MQTT temperature/humidity sensor and a `type: mqtt` heat-pump controller reach HA as
    correctly classed entities and InfluxDB as points in `environment`."""
    z2m, heat_topic = f"{base_topic}_z2m", f"{base_topic}/devices/heatpump/state"
    text = readme_block("retrofit").replace("devices/heatpump/state", heat_topic)
    block = yaml.safe_load(text)
    block["sources"][0]["base_topic"] = z2m  # one broker serves the whole session
    config = BridgeConfig.model_validate({**bridge_settings(broker, victoria, tmp_path, "retro", base_topic), **block})
    devices = json.loads((FIXTURES / "zigbee2mqtt" / "bridge_devices.payload.json").read_text())
    room = "hall/temperature"  # an Aqara WSDCGQ11LM in the fixture's device list
    meter = "zigbee_00158d0000000002"
    ha = homeassistant_mqtt
    async with client_for(broker) as devices_client:
        await devices_client.publish(f"{z2m}/bridge/devices", json.dumps(devices).encode(), qos=1, retain=True)
        async with Bridge(config):
            sensor = (FIXTURES / "zigbee2mqtt" / "room_sensor_wsdcgq11lm.payload.json").read_bytes()
            controller = (FIXTURES / "mqtt" / "heat_pump_controller.payload").read_bytes()

            async def in_ha(entity_id: str) -> bool:
                states = {s["entity_id"]: s["state"] for s in await ha.rest("GET", "/api/states")}
                return states.get(entity_id) not in (None, "unknown", "unavailable")

            await publish_until(devices_client, f"{z2m}/{room}", sensor, lambda: in_ha(f"sensor.hems_{meter}_humidity"))
            await publish_until(
                devices_client, heat_topic, controller, lambda: in_ha("sensor.hems_heat_pump_heat_power")
            )
            states = await wait_for_states(
                ha,
                {
                    f"sensor.hems_{meter}_temperature": "21.47",
                    f"sensor.hems_{meter}_humidity": "55.12",
                    "sensor.hems_heat_pump_flow_temperature": "45.5",
                    "sensor.hems_heat_pump_return_temperature": "39.0",
                    "sensor.hems_heat_pump_heat_energy": "3210.5",
                    "sensor.hems_heat_pump_heat_power": "4200",
                    "sensor.hems_heat_pump_power": "1200",
                },
            )
            assert f"sensor.hems_{meter}_voltage" not in states  # the battery's voltage is not a mains voltage
            assert classes(states, f"sensor.hems_{meter}_temperature") == ("temperature", "measurement", "°C")
            assert classes(states, f"sensor.hems_{meter}_humidity") == ("humidity", "measurement", "%")
            assert classes(states, "sensor.hems_heat_pump_flow_temperature") == ("temperature", "measurement", "°C")
            assert classes(states, "sensor.hems_heat_pump_heat_energy") == ("energy", "total_increasing", "kWh")
            assert classes(states, "sensor.hems_heat_pump_heat_power") == ("power", "measurement", "W")

            for name, want in (("environment_temperature", 21.47), ("environment_humidity", 55.12)):
                assert (await points(victoria, name, meter))[0].values[-1] == pytest.approx(want)
            for name, want in (
                ("environment_flow_temperature", 45.5),
                ("environment_return_temperature", 39.0),
                ("environment_heat_energy", 3210.5),
                ("environment_heat_power", 4200.0),
                ("mqtt_power", 1200.0),  # electricity stays in the family's measurement
            ):
                assert (await points(victoria, name, "heat_pump"))[0].values[-1] == pytest.approx(want)
        await devices_client.publish(f"{z2m}/bridge/devices", b"", retain=True)


async def test_senselink_user(
    broker: Mosquitto,
    homeassistant_mqtt: HomeAssistant,
    victoria: Victoria,
    tmp_path: Path,
    base_topic: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`meter-bridge import senselink` on SenseLink's MQTT config: readings in HA and InfluxDB, and
    python-kasa reads every plug with the MAC and deviceId SenseLink's plugs had."""
    source = tmp_path / "senselink.yml"
    # one broker serves the whole session: the SenseLink config's topics get this test's prefix
    text = (FIXTURES / "senselink" / "mqtt.yml").read_text()
    source.write_text(re.sub(r"(topic: )(\S+)", rf"\g<1>{base_topic}/\g<2>", text))
    kasa_port = free_port()
    base = bridge_settings(broker, victoria, tmp_path, "sl", base_topic)
    base["kasa"] = {"bind": "127.0.0.1", "port": kasa_port}
    into = tmp_path / "config.yaml"
    into.write_text(yaml.safe_dump(base))

    assert main(["import", "senselink", str(source), "--into", str(into)]) == 0  # the documented command
    converted, _ = capsys.readouterr()
    data = yaml.safe_load(converted)
    # Kasa clients key plugs by IP: on a LAN each plug that python-kasa should read gets an address
    for index, plug in enumerate(data["kasa"]["plugs"]):
        plug["address"] = f"127.0.0.{20 + index}"
    (tmp_path / "converted.yaml").write_text(yaml.safe_dump(data))
    config = load_config(tmp_path / "converted.yaml", {})

    ha = homeassistant_mqtt
    async with Bridge(config), client_for(broker) as devices:
        washer = b'{"Time":"2026-11-21T19:59:50","ENERGY":{"Total":12.5,"Power":480}}'

        await publish_until(
            devices,
            f"{base_topic}/tele/washer/SENSOR",
            washer,
            lambda: has_state(ha, "sensor.hems_washer_power", "480"),
        )
        await devices.publish(f"{base_topic}/stat/kettle/POWER", b"ON", qos=1)
        await devices.publish(f"{base_topic}/devices/desklamp/state", b'{"brightness": 255}', qos=1)
        await devices.publish(f"{base_topic}/devices/heater/power", b"1500", qos=1)
        states = await wait_for_states(
            ha,
            {
                "sensor.hems_washer_power": "480",
                "sensor.hems_kettle_power": "2200",
                "sensor.hems_desk_lamp_power": "9",  # brightness 0-255 onto 1-9 W
                "sensor.hems_heater_power": "1500",
            },
        )
        assert classes(states, "sensor.hems_kettle_power") == ("power", "measurement", "W")
        assert (await points(victoria, "mqtt_power", "washer"))[0].values[-1] == 480.0
        assert (await points(victoria, "mqtt_power", "kettle"))[0].values[-1] == 2200.0

        senselink = yaml.safe_load(text)
        expected = {}
        for entry in senselink["sources"]:
            for plug in next(iter(entry.values()))["plugs"]:
                ((_, details),) = plug.items()
                # SenseLink answered with the MAC, upper case, as both mac and deviceId
                expected[details["mac"].upper()] = (details["mac"].upper(), details["alias"])
        seen = {}
        for plug in data["kasa"]["plugs"]:
            device = await Discover.discover_single(plug["address"], port=kasa_port, discovery_timeout=2)
            try:
                await device.update()
                seen[device.mac] = (device.device_id, device.alias)
                if plug["id"] == "washer":
                    assert device.modules[Module.Energy].current_consumption == 480.0
            finally:
                await device.disconnect()
        assert seen == expected


async def test_senselink_hass_plugs_read_home_assistant_entities(
    broker: Mosquitto,
    homeassistant_mqtt: HomeAssistant,
    tmp_path: Path,
    base_topic: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SenseLink's `hass` example converted: a switch's `on` is its max_watts (not unavailable), an
    unquoted `off` still means off, a dimmer's brightness scales; states come from the real HA's
    websocket (set here through its REST API, as an integration would)."""
    ha = homeassistant_mqtt
    source = tmp_path / "senselink.yml"
    text = (FIXTURES / "senselink" / "config_example.yml").read_text()
    source.write_text(text.replace("ws://your.HASS.API.URL.here", ha.ws_url))
    into = tmp_path / "config.yaml"
    base = {
        "site": {"id": "slh"},
        "mqtt": broker.bridge_mqtt(base_topic),
        "homeassistant": {"min_interval_s": 0},
        "health": {"enabled": False},
    }
    into.write_text(yaml.safe_dump(base))
    assert main(["import", "senselink", str(source), "--into", str(into)]) == 0
    converted = tmp_path / "converted.yaml"
    data = yaml.safe_load(capsys.readouterr().out)
    data["kasa"]["enabled"] = False  # the plugs themselves are test_senselink_user's
    converted.write_text(yaml.safe_dump(data))
    config = load_config(converted, {"HA_TOKEN": ha.token})

    await ha.rest("POST", "/api/states/switch.dehumidifier", {"state": "off"})
    await ha.rest("POST", "/api/states/light.kitchen_main_lights", {"state": "on", "attributes": {"brightness": 128}})
    async with Bridge(config):
        await wait_for_states(ha, {"sensor.hems_dehumidifier_power": "0", "sensor.hems_kitchen_lights_power": "21.082"})
        await ha.rest("POST", "/api/states/switch.dehumidifier", {"state": "on"})
        await ha.rest("POST", "/api/states/light.kitchen_main_lights", {"state": "off"})
        await wait_for_states(ha, {"sensor.hems_dehumidifier_power": "42", "sensor.hems_kitchen_lights_power": "0"})
