"""The bridge against a real Mosquitto with authentication: discovery, state, recovery."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from helpers.mosquitto import Mosquitto
from helpers.mqtt import client_for, recording
from helpers.net import free_port
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig
from meterbridge.ha_entities import Device, EntityDescription
from meterbridge.model import Quantity


def bridge_config(broker: Mosquitto, base_topic: str, **overrides: Any) -> BridgeConfig:
    data: dict[str, Any] = {
        "site": {"id": "home"},
        "mqtt": broker.bridge_mqtt(base_topic),
        "homeassistant": {"discovery_prefix": f"{base_topic}_ha", "min_interval_s": 0},
        "health": {"port": 0},
        "sources": [
            {"type": "simulated", "id": "grid", "name": "Grid", "interval_s": 0.2, "pv_peak_w": 3000},
            {"type": "simulated", "id": "heat_pump", "name": "Heat pump", "profile": "heat_pump", "interval_s": 0.2},
        ],
    }
    data.update(overrides)
    return BridgeConfig.model_validate(data)


async def test_anonymous_and_wrong_password_are_refused(broker: Mosquitto) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(broker.host, broker.port):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(broker.host, broker.port, username="bridge", password="wrong"):
            pass


async def test_discovery_and_retained_state_field_by_field(broker: Mosquitto, base_topic: str) -> None:
    config = bridge_config(broker, base_topic)
    prefix = f"{base_topic}_ha"
    async with Bridge(config):
        async with recording(broker, f"{base_topic}/#", f"{prefix}/#") as rec:
            power_topic = f"{prefix}/sensor/hems/hems_grid_power/config"
            wanted = {
                power_topic,
                f"{prefix}/sensor/hems/hems_grid_energy_import/config",
                f"{prefix}/sensor/hems/hems_heat_pump_power/config",
                f"{base_topic}/meter/grid",
                f"{base_topic}/meter/grid/availability",
            }
            await rec.wait_for(lambda r: wanted <= set(r.last))
            discovery = rec.json(power_topic)
            assert discovery["unique_id"] == "hems_home_grid_power"
            assert discovery["device_class"] == "power"
            assert discovery["state_class"] == "measurement"
            assert discovery["unit_of_measurement"] == "W"
            assert discovery["state_topic"] == f"{base_topic}/meter/grid"
            assert discovery["availability_mode"] == "all"
            assert [a["topic"] for a in discovery["availability"]] == [
                f"{base_topic}/bridge/availability",
                f"{base_topic}/meter/grid/availability",
            ]
            assert discovery["device"]["identifiers"] == ["hems_home_grid"]
            assert discovery["device"]["name"] == "Grid"
            assert discovery["origin"]["name"] == "meter-bridge"
            energy = rec.json(f"{prefix}/sensor/hems/hems_grid_energy_import/config")
            assert (energy["device_class"], energy["state_class"], energy["unit_of_measurement"]) == (
                "energy",
                "total_increasing",
                "kWh",
            )
            # one device per meter
            heat_pump = rec.json(f"{prefix}/sensor/hems/hems_heat_pump_power/config")
            assert heat_pump["device"]["identifiers"] == ["hems_home_heat_pump"]

            state = rec.json(f"{base_topic}/meter/grid")
            assert set(state) >= {"power", "energy_import", "energy_export", "voltage", "current", "ts"}
            assert isinstance(state["power"], float)
            assert rec.last[f"{base_topic}/bridge/availability"] == b"online"
            assert rec.last[f"{base_topic}/meter/grid/availability"] == b"online"

        # everything HA needs is retained: a late subscriber (HA starting later) sees it all
        async with recording(broker, f"{base_topic}/#", f"{prefix}/#") as late:
            await late.wait_for(lambda r: wanted <= set(r.last))
            retained = {topic for topic, _payload, retain in late.messages if retain}
            assert f"{prefix}/sensor/hems/hems_grid_power/config" in retained
            assert f"{base_topic}/meter/grid" in retained
            assert f"{base_topic}/bridge/availability" in retained


async def test_state_energy_totals_are_exact_under_rate_limiting(broker: Mosquitto, base_topic: str) -> None:
    config = bridge_config(
        broker,
        base_topic,
        homeassistant={"discovery_prefix": f"{base_topic}_ha", "min_interval_s": 3600, "power_deadband_w": 1e9},
        sources=[{"type": "simulated", "id": "grid", "interval_s": 0.05}],
    )
    bridge = Bridge(config)
    await bridge.start()
    async with recording(broker, f"{base_topic}/meter/grid") as rec:
        await rec.wait_for(lambda r: f"{base_topic}/meter/grid" in r.last)
        await asyncio.sleep(1.0)
        # the interval holds back intermediate states...
        assert len(rec.messages) == 1
        await bridge.shutdown()
        await rec.wait_for(lambda r: len(r.messages) == 2)
    # ...and shutdown flushes the latest, exact total
    source = bridge.stats.sources["grid"]
    final = json.loads(rec.messages[-1][1])
    assert source.readings > 20 * 5
    assert final["energy_import"] > json.loads(rec.messages[0][1])["energy_import"]


async def test_recorded_state_carries_every_total_and_the_mean_power(broker: Mosquitto, base_topic: str) -> None:
    """The recorded topic (what HA's recorder keeps): at once for a new meter, then once per clock
    step with the step's mean power, retained; the totals HA records are the live ones."""
    prefix = f"{base_topic}_ha"
    config = bridge_config(
        broker,
        base_topic,
        homeassistant={"discovery_prefix": prefix, "min_interval_s": 0, "recorded_interval_s": 10},
        sources=[{"type": "simulated", "id": "grid", "interval_s": 0.1, "pv_peak_w": 3000}],
    )
    recorded_topic = f"{base_topic}/meter/grid/recorded"
    bridge = Bridge(config)
    await bridge.start()
    async with recording(broker, f"{base_topic}/#", f"{prefix}/#") as rec:
        # the first at once, then one at each step of the wall clock: the next step may come at any
        # moment after the first, so the whole step is the one between the second and the third
        # (10 s apart; the bound only stops a hang)
        await rec.wait_for(lambda r: len([m for m in r.messages if m[0] == recorded_topic]) >= 3, timeout=60)
        recorded = [json.loads(payload) for topic, payload, _ in rec.messages if topic == recorded_topic]
        initial, first, second = recorded[:3]
        live = [json.loads(payload) for topic, payload, _ in rec.messages if topic == f"{base_topic}/meter/grid"]
        for body in (initial, first, second):
            assert set(body) == set(live[-1]) | {"power_average"}
        # a mean of the powers held over the whole step (~one reading every 0.1 s)
        between = [b["power"] for b in live if first["ts"] <= b["ts"] <= second["ts"]]
        assert len(between) > 2  # many under any load; a mean needs several
        assert min(between) <= second["power_average"] <= max(between)
        assert second["power_average"] not in between  # a mean, not a sample
        assert second["energy_import"] >= first["energy_import"]
        for quantity in ("energy_import", "energy_export", "power_average"):
            discovery = rec.json(f"{prefix}/sensor/hems/hems_grid_{quantity}/config")
            assert discovery["state_topic"] == recorded_topic
        assert rec.json(f"{prefix}/sensor/hems/hems_grid_power/config")["state_topic"] == f"{base_topic}/meter/grid"
        await bridge.shutdown()
        # shutdown sends the latest totals on both topics: HA records the exact final total
        await rec.wait_for(lambda r: r.messages[-1][0] == f"{base_topic}/bridge/availability")
    final_live = rec.json(f"{base_topic}/meter/grid")
    final_recorded = rec.json(recorded_topic)
    assert final_recorded["energy_import"] == final_live["energy_import"]
    assert final_recorded["ts"] == final_live["ts"]
    async with recording(broker, recorded_topic) as late:
        await late.wait_for(lambda r: recorded_topic in r.last)
        assert [retain for _topic, _payload, retain in late.messages] == [True]


async def test_homeassistant_online_makes_it_republish_discovery(broker: Mosquitto, base_topic: str) -> None:
    config = bridge_config(broker, base_topic)
    prefix = f"{base_topic}_ha"
    topic = f"{prefix}/sensor/hems/hems_grid_power/config"
    async with Bridge(config), recording(broker, f"{prefix}/sensor/hems/+/config") as rec:
        await rec.wait_for(lambda r: topic in r.last)
        await asyncio.sleep(0.3)
        before = sum(1 for t, _p, _r in rec.messages if t == topic)
        async with client_for(broker) as ha:
            await ha.publish(f"{prefix}/status", b"online", qos=1)
        await rec.wait_for(lambda r: sum(1 for t, _p, _r in r.messages if t == topic) > before)
        fresh = [(t, r) for t, _p, r in rec.messages if t == topic][-1]
        assert fresh == (topic, False)  # a live re-publish, not the retained copy


@pytest.mark.slow
async def test_broker_down_10_s_bridge_recovers_by_itself(own_broker: Mosquitto, base_topic: str) -> None:
    config = bridge_config(own_broker, base_topic)
    prefix = f"{base_topic}_ha"
    async with Bridge(config) as bridge:
        async with recording(own_broker, f"{base_topic}/#", f"{prefix}/#") as rec:
            await rec.wait_for(lambda r: f"{prefix}/sensor/hems/hems_grid_power/config" in r.last)
        sink = bridge.stats.sinks["homeassistant"]
        assert sink.connected is True

        own_broker.stop()  # persistence is off: every retained message is gone with it
        await asyncio.sleep(10)
        assert sink.connected is False
        readings_during_outage = bridge.stats.sources["grid"].readings
        own_broker.start()

        async with recording(own_broker, f"{base_topic}/#", f"{prefix}/#") as rec:
            await rec.wait_for(
                lambda r: (
                    r.last.get(f"{base_topic}/bridge/availability") == b"online"
                    and f"{prefix}/sensor/hems/hems_grid_power/config" in r.last
                    and f"{prefix}/sensor/hems/hems_heat_pump_energy_import/config" in r.last
                    and r.last.get(f"{base_topic}/meter/grid/availability") == b"online"
                    and f"{base_topic}/meter/grid" in r.last
                ),
                timeout=30,
            )
            state = rec.json(f"{base_topic}/meter/grid")
            assert state["energy_import"] > 0
        assert sink.connected is True
        assert bridge.stats.sources["grid"].readings > readings_during_outage  # sources never stopped


def test_sigterm_shuts_down_within_5_s_and_says_offline(tmp_path: Path, broker: Mosquitto, base_topic: str) -> None:
    health_port = free_port()
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        f"""\
mqtt:
  host: {broker.host}
  port: {broker.port}
  username: bridge
  password: ${{MQTT_PASSWORD}}
  base_topic: {base_topic}
health:
  port: {health_port}
sources:
  - type: simulated
    id: grid
    interval_s: 0.1
    stale_after_s: 60
"""
    )
    env = {**os.environ, "MQTT_PASSWORD": broker.password("bridge")}
    bridge = subprocess.Popen(
        [sys.executable, "-m", "meterbridge.cli", "run", "--config", str(config_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            status = subprocess.run(
                [sys.executable, "-m", "meterbridge.cli", "status", "--config", str(config_file)],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if status.returncode == 0:
                break
            time.sleep(0.3)
        assert status is not None
        assert status.returncode == 0, status.stdout + status.stderr
        assert "grid" in status.stdout
        assert "healthy" in status.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics") as response:
            metrics = response.read().decode()
        assert 'meterbridge_source_readings_total{source="grid"}' in metrics
        assert 'meterbridge_sink_connected{sink="homeassistant"} 1.0' in metrics
        assert "meterbridge_mqtt_reader_paused_total 0.0" in metrics

        bridge.send_signal(signal.SIGTERM)
        # balenaEngine sends SIGKILL 10 s after SIGTERM: a clean stop must fit in that window
        bridge.wait(timeout=10)
        assert bridge.returncode == 0
    finally:
        if bridge.poll() is None:
            bridge.kill()
    output = bridge.stdout.read().decode() if bridge.stdout else ""
    assert "Bridge stopped" in output
    assert broker.password("bridge") not in output

    async def availability() -> bytes:
        async with recording(broker, f"{base_topic}/bridge/availability") as rec:
            await rec.wait_for(lambda r: bool(r.last))
            return rec.last[f"{base_topic}/bridge/availability"]

    assert asyncio.run(availability()) == b"offline"
    # with the bridge gone, status says so and exits non-zero
    gone = subprocess.run(
        [sys.executable, "-m", "meterbridge.cli", "status", "--config", str(config_file)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert gone.returncode == 1


async def test_status_reports_a_stale_source(broker: Mosquitto, base_topic: str) -> None:
    config = bridge_config(
        broker, base_topic, sources=[{"type": "simulated", "id": "slow", "interval_s": 3600, "stale_after_s": 0.5}]
    )
    async with Bridge(config) as bridge:
        await asyncio.sleep(1.0)
        assert bridge.health is not None
        from meterbridge.cli import main

        code = await asyncio.to_thread(main, ["status", "--url", f"http://127.0.0.1:{bridge.health.port}/healthz"])
        assert code == 1


def test_quantities_used_by_simulated_meters_have_discovery() -> None:
    from meterbridge.sinks.homeassistant.discovery import ENTITY_DESCRIPTIONS

    assert set(ENTITY_DESCRIPTIONS) == set(Quantity)


async def test_catalog_entities_announced_reannounced_on_birth_and_removed(broker: Mosquitto, base_topic: str) -> None:
    """Entities described by other parts (here a relay switch) go out through the HA sink alone."""
    config = bridge_config(broker, base_topic, sources=[])
    prefix = f"{base_topic}_ha"
    topic = f"{prefix}/switch/hems/hems_pump_relay/config"
    switch = EntityDescription(
        "switch", "pump_relay", "Relay", Device("pump", "Pump"), state_topic="x/state", command_topic="x/set"
    )
    async with Bridge(config) as bridge, recording(broker, f"{prefix}/#") as rec:
        bridge.catalog.describe("test", [switch])
        await rec.wait_for(lambda r: topic in r.last)
        payload = rec.json(topic)
        assert (payload["default_entity_id"], payload["object_id"]) == ("switch.hems_pump_relay", "hems_pump_relay")
        assert payload["unique_id"] == "hems_home_pump_relay"
        bridge.catalog.describe("test", [switch])  # the same again: nothing new goes out
        await asyncio.sleep(0.3)
        assert sum(1 for t, _p, _r in rec.messages if t == topic) == 1
        async with client_for(broker) as ha:
            await ha.publish(f"{prefix}/status", b"online", qos=1)
        await rec.wait_for(lambda r: sum(1 for t, _p, _r in r.messages if t == topic) == 2)
        bridge.catalog.describe("test", [])  # the owner no longer offers it: HA removes it
        await rec.wait_for(lambda r: r.last.get(topic) == b"")


async def test_catalog_states_go_out_once_retained_and_again_after_a_reconnect(own_broker: Mosquitto) -> None:
    """States of owners with no connection of their own (utility status) share the HA sink's."""
    config = bridge_config(own_broker, "cat", sources=[])
    topic = "cat/utility/opw/status"
    async with Bridge(config) as bridge, recording(own_broker, topic) as rec:
        bridge.catalog.set_state(topic, b'{"status":"ok"}')
        await rec.wait_for(lambda r: r.last.get(topic) == b'{"status":"ok"}')
        bridge.catalog.set_state(topic, b'{"status":"ok"}')  # the same again: nothing new goes out
        await asyncio.sleep(0.3)
        assert [(p, r) for t, p, r in rec.messages if t == topic] == [(b'{"status":"ok"}', False)]
    own_broker.restart()  # persistence is off: the retained state is gone with the broker
    async with Bridge(config) as bridge:
        bridge.catalog.set_state(topic, b'{"status":"outage"}')
        await asyncio.sleep(0.5)
        own_broker.restart()  # the sink reconnects and publishes what the catalog holds again
        async with recording(own_broker, topic) as rec:
            await rec.wait_for(lambda r: r.last.get(topic) == b'{"status":"outage"}', timeout=20)


async def test_no_discovery_at_all_when_home_assistant_is_disabled(broker: Mosquitto, base_topic: str) -> None:
    prefix = f"{base_topic}_ha"
    config = bridge_config(broker, base_topic, homeassistant={"discovery_prefix": prefix, "enabled": False})
    switch = EntityDescription("switch", "pump_relay", "Relay", Device("pump", "Pump"), command_topic="x/set")
    async with Bridge(config) as bridge, recording(broker, f"{prefix}/#", f"{base_topic}/meter/#") as rec:
        bridge.catalog.describe("test", [switch])
        await rec.wait_for(lambda r: f"{base_topic}/meter/grid" in r.last)  # state still flows
        await asyncio.sleep(0.5)
        assert not [t for t, _p, _r in rec.messages if t.startswith(prefix)]
