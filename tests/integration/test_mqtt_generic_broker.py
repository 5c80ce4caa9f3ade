"""`type: mqtt` against the release's own broker (its entrypoint, users and ACL; a real Mosquitto
with authentication): Tasmota, ESPHome and OpenEVSE shapes reach the bridge's HA topics, garbage
and missing keys are counted, a silent device times out, and a topic the ACL keeps from the
bridge is named in an error instead of staying silent.

The devices cannot run here; the test publishes what they publish, in their documented shapes
(`tests/fixtures/mqtt/`), as the `devices` user they would use.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.mqtt import Recorder, client_for, recording
from helpers.release import ReleaseBroker
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig

FIXTURES = Path(__file__).parents[1] / "fixtures" / "mqtt"
DEVICES_PASSWORD = "devices-password-for-tests"


@pytest.fixture(scope="module")
def devices_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseBroker]:
    broker = ReleaseBroker(tmp_path_factory.mktemp("release-mqtt"), env={"MQTT_DEVICES_PASSWORD": DEVICES_PASSWORD})
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def device(devices_broker: ReleaseBroker) -> AsyncIterator[Any]:
    async with client_for(devices_broker, "devices") as client:  # type: ignore[arg-type]
        yield client


def config(broker: ReleaseBroker, base: str, meters: list[dict[str, Any]]) -> BridgeConfig:
    return BridgeConfig.model_validate(
        {
            "site": {"id": "t"},
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "username": "bridge",
                "password": broker.password("bridge"),
                "base_topic": "hems",
                "client_id": f"bridge-{base}",
            },
            "homeassistant": {"min_interval_s": 0},
            "health": {"enabled": False},
            "sources": [{"type": "mqtt", "id": "devices", "meters": meters}],
        }
    )


def state(rec: Recorder, meter: str) -> dict[str, Any]:
    topic = f"hems/meter/{meter}"
    return rec.json(topic) if topic in rec.last else {}


async def publish_until(device: Any, rec: Recorder, topic: str, body: bytes, done: Any) -> None:
    """Publish (not retained) until `done(rec)`: the bridge may not have subscribed yet (60 s: a hang bound)."""
    for _ in range(200):
        await device.publish(topic, body, qos=1)
        try:
            await rec.wait_for(done, 0.3)
            return
        except AssertionError:
            continue
    await rec.wait_for(done, 0.1)


def payload(case: str) -> bytes:
    return (FIXTURES / f"{case}.payload").read_bytes()


async def test_presets_reach_home_assistant_topics(devices_broker: ReleaseBroker, device: Any, base_topic: str) -> None:
    kettle, dryer, evse = f"{base_topic}_kettle", f"devices/{base_topic}_laundry", f"devices/{base_topic}_evse"
    meters = [
        {"id": "kettle", "preset": "tasmota", "device": kettle},
        {"id": "dryer", "preset": "esphome", "device": dryer, "sensors": {"power": "dryer_power"}},
        {"id": "ev_charger", "preset": "openevse", "device": evse},
    ]
    cfg = config(devices_broker, base_topic, meters)
    async with recording(devices_broker, "hems/#", "homeassistant/#", user="homeassistant") as rec:  # type: ignore[arg-type]
        async with Bridge(cfg) as bridge:
            stats = bridge.stats.sources["devices"]
            # Tasmota: LWT retained, then telemetry
            await device.publish(f"tele/{kettle}/LWT", b"Online", qos=1, retain=True)
            await publish_until(
                device, rec, f"tele/{kettle}/SENSOR", payload("tasmota_pow"), lambda r: state(r, "kettle").get("power")
            )
            assert state(rec, "kettle")["power"] == 56.0
            assert state(rec, "kettle")["energy_import"] == 514.153
            assert rec.last["hems/meter/kettle/availability"] == b"online"
            await rec.wait_for(lambda r: "homeassistant/sensor/hems/hems_kettle_power/config" in r.last)
            discovery = rec.json("homeassistant/sensor/hems/hems_kettle_power/config")
            assert discovery["device"]["manufacturer"] == "Tasmota"
            # ESPHome: plain numbers on its own topics
            await device.publish(f"{dryer}/status", b"online", qos=1, retain=True)
            await device.publish(f"{dryer}/sensor/dryer_power/state", payload("esphome_power"), qos=1)
            await rec.wait_for(lambda r: state(r, "dryer").get("power") == 1234.5)
            # OpenEVSE: mA and tenths of a degree
            await device.publish(f"{evse}/amp", payload("openevse_amp"), qos=1)
            await device.publish(f"{evse}/temp", payload("openevse_temp"), qos=1)
            await rec.wait_for(lambda r: state(r, "ev_charger").get("temperature") == 34.5)
            assert state(rec, "ev_charger")["current"] == 16.25
            config_topic = "homeassistant/sensor/hems/hems_ev_charger_temperature/config"
            await rec.wait_for(lambda r: config_topic in r.last)
            temperature = rec.json(config_topic)
            assert (temperature["device_class"], temperature["unit_of_measurement"]) == ("temperature", "°C")

            # garbage and missing keys are counted; the source carries on
            await device.publish(f"tele/{kettle}/SENSOR", payload("tasmota_garbage"), qos=1)
            await device.publish(f"tele/{kettle}/SENSOR", payload("tasmota_missing_keys"), qos=1)
            await device.publish(f"tele/{kettle}/SENSOR", json.dumps({"ENERGY": {"Power": 60, "Total": 515}}).encode())
            await rec.wait_for(lambda r: state(r, "kettle").get("power") == 60.0)
            assert stats.errors["parse"] == 1
            assert stats.errors["dropped"] >= 4

            # the device's last will: unavailable
            await device.publish(f"tele/{kettle}/LWT", b"Offline", qos=1, retain=True)
            await rec.wait_for(lambda r: r.last.get("hems/meter/kettle/availability") == b"offline")
        for topic in (f"tele/{kettle}/LWT", f"{dryer}/status"):
            await device.publish(topic, b"", retain=True)


async def test_silent_device_times_out_and_comes_back(
    devices_broker: ReleaseBroker, device: Any, base_topic: str
) -> None:
    topic = f"devices/{base_topic}/heatpump"
    meters = [{"id": "pump", "state_topic": topic, "timeout_s": 1.0, "values": [{"quantity": "power", "key": "p"}]}]
    avail = "hems/meter/pump/availability"
    async with (
        recording(devices_broker, "hems/#", user="homeassistant") as rec,  # type: ignore[arg-type]
        Bridge(config(devices_broker, base_topic, meters)),
    ):
        await publish_until(device, rec, topic, b'{"p": 900}', lambda r: r.last.get(avail) == b"online")
        await rec.wait_for(lambda r: r.last.get(avail) == b"offline", 30)  # nothing for > 1 s
        await device.publish(topic, b'{"p": 950}', qos=1)
        await rec.wait_for(lambda r: r.last.get(avail) == b"online" and state(r, "pump").get("power") == 950.0)


async def test_topic_outside_the_acl_is_named(
    devices_broker: ReleaseBroker, device: Any, base_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Mosquitto 2.0.11 grants a subscription its ACL denies (SUBACK 0) and delivers nothing: the
    bridge cannot tell, so a meter never heard within its timeout is named with the ACL's rule."""
    topic = f"{base_topic}/not/allowed"
    meters = [{"id": "odd", "state_topic": topic, "timeout_s": 1.0, "values": [{"quantity": "power"}]}]
    async with (
        recording(devices_broker, "hems/#", user="homeassistant") as rec,  # type: ignore[arg-type]
        Bridge(config(devices_broker, base_topic, meters)) as bridge,
    ):
        stats = bridge.stats.sources["devices"]
        for _ in range(5):
            await device.publish(topic, b"100", qos=1)  # the devices user may not write it either
        await rec.wait_for(lambda r: stats.errors["silent"] == 1, 30)
        assert "hems/meter/odd" not in rec.last
    assert f"nothing received on {topic}" in caplog.text
    assert "devices/#, tele/# and stat/#" in caplog.text
