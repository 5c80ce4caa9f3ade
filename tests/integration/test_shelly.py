"""The Shelly source, relay control and provisioning against the simulator on a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.mosquitto import Mosquitto
from helpers.mqtt import client_for, recording
from helpers.release import ReleaseBroker
from helpers.shelly_sim import ShellySim
from meterbridge.config import BridgeConfig, MqttConfig
from meterbridge.errors import SourceTimeoutError
from meterbridge.ha_entities import EntityCatalog
from meterbridge.model import Event, MeterAvailability, Quantity, Reading
from meterbridge.mqtt import make_client
from meterbridge.sinks.homeassistant import HomeAssistantSink
from meterbridge.sources import SourceContext
from meterbridge.sources.shelly.identity import ShellyIdentityStore
from meterbridge.sources.shelly.provision import RETIRED_SCRIPT_NAME, RETIRED_SCRIPT_TOPIC, ProvisionSettings, provision
from meterbridge.sources.shelly.relay import ShellyRelay, ShellyRpcError, shelly_rpc_session
from meterbridge.sources.shelly.source import ShellySource
from meterbridge.stats import SourceStats

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shelly_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A broker with a user for the simulated Shellys besides `bridge` and `observer`."""
    users = {name: secrets.token_urlsafe(12) for name in ("bridge", "observer", "shelly")}
    instance = Mosquitto(tmp_path_factory.mktemp("mosquitto-shelly"), users=users)
    instance.start()
    yield instance
    instance.stop()


def _bridge_config(broker: Mosquitto, base_topic: str, source: dict[str, Any]) -> BridgeConfig:
    return BridgeConfig.model_validate(
        {
            "site": {"id": "home"},
            "mqtt": broker.bridge_mqtt(base_topic),
            "homeassistant": {"discovery_prefix": f"{base_topic}_ha"},
            "sources": [source],
        }
    )  # fmt: skip


class Events:
    """A `SourceContext` whose events land in a list we can wait on."""

    def __init__(self, source_id: str, catalog: EntityCatalog | None = None) -> None:
        self.items: list[Event] = []
        self.ctx = SourceContext(source_id, SourceStats("shelly", 300.0), self.items.append, catalog)

    async def wait_for(
        self, predicate: Callable[[list[Event]], bool], timeout: float = 30.0, message: object = None
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.items):
            assert time.monotonic() < deadline, f"not seen in {timeout} s: {message or self.items[-10:]}"
            await asyncio.sleep(0.02)

    def values(self, meter_id: str, quantity: Quantity) -> list[float]:
        return [
            e.value for e in self.items if isinstance(e, Reading) and e.meter_id == meter_id and e.quantity == quantity
        ]

    def availability(self, meter_id: str) -> list[bool]:
        return [e.available for e in self.items if isinstance(e, MeterAvailability) and e.meter_id == meter_id]


async def _sim(broker: Mosquitto, model: str, **kwargs: Any) -> ShellySim:
    sim = ShellySim(model, **kwargs)
    sim.configure_mqtt(f"{broker.host}:{broker.port}", "shelly", broker.password("shelly"))
    await sim.start()
    await sim.wait_connected()
    return sim


async def _running(source: ShellySource, events: Events) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run(events.ctx))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def plus1pm(shelly_broker: Mosquitto) -> AsyncIterator[ShellySim]:
    sim = await _sim(shelly_broker, "plus1pm")
    yield sim
    await sim.stop()


def _source(broker: Mosquitto, base_topic: str, devices: list[dict[str, Any]], **extra: Any) -> ShellySource:
    cfg = _bridge_config(broker, base_topic, {"type": "shelly", "id": "shelly", "devices": devices, **extra})
    return ShellySource(cfg.sources[0], cfg.mqtt_context)  # type: ignore[arg-type]


async def test_deltas_merged_and_unchanged_values_still_reported(
    shelly_broker: Mosquitto, base_topic: str, plus1pm: ShellySim
) -> None:
    source = _source(shelly_broker, base_topic, [{"prefix": plus1pm.prefix, "id": "heater"}], reemit_s=0.3)
    events = Events("shelly")
    async for _ in _running(source, events):
        await events.wait_for(lambda _: 1203.4 in events.values("shelly_heater", Quantity.POWER))
        assert events.availability("shelly_heater") == [True]
        await plus1pm.change({"switch:0": {"id": 0, "apower": 500.0}})  # a delta: power only
        await events.wait_for(lambda _: 500.0 in events.values("shelly_heater", Quantity.POWER))
        # the energy total and voltage were not in the delta but are still reported with it
        after = len(events.items)
        await events.wait_for(lambda _: len(events.values("shelly_heater", Quantity.ENERGY_IMPORT)) >= 4)
        energies = events.values("shelly_heater", Quantity.ENERGY_IMPORT)
        assert energies == [pytest.approx(12.345678)] * len(energies)

        # with no change at all, the last values keep coming (re-emitted every reemit_s): waited
        # for as a count (a loaded machine may re-emit fewer in a given time; the bound stops a hang)
        def voltages_since_the_delta(after: int = after) -> list[Reading]:
            return [e for e in events.items[after:] if isinstance(e, Reading) and e.quantity == Quantity.VOLTAGE]

        await events.wait_for(lambda _: len(voltages_since_the_delta()) >= 2, timeout=60)
        later = voltages_since_the_delta()
        assert {e.value for e in later} == {231.2}
        assert events.values("shelly_heater", Quantity.POWER)[-1] == 500.0
    assert "Shelly.GetStatus" in plus1pm.calls


async def test_offline_unavailable_then_online_refetches_full_status(
    shelly_broker: Mosquitto, base_topic: str, plus1pm: ShellySim
) -> None:
    source = _source(shelly_broker, base_topic, [{"prefix": plus1pm.prefix, "id": "heater"}])
    events = Events("shelly")
    async for _ in _running(source, events):
        await events.wait_for(lambda _: plus1pm.calls.count("Shelly.GetStatus") == 1)
        await events.wait_for(lambda _: events.availability("shelly_heater") == [True])
        await plus1pm.go_offline()
        await events.wait_for(lambda _: events.availability("shelly_heater") == [True, False])
        plus1pm.status["switch:0"]["apower"] = 42.0  # changed while away; nothing is sent for it
        await plus1pm.go_online()
        await events.wait_for(lambda _: events.availability("shelly_heater") == [True, False, True])
        await events.wait_for(lambda _: plus1pm.calls.count("Shelly.GetStatus") == 2, message=plus1pm.calls)
        await events.wait_for(lambda _: 42.0 in events.values("shelly_heater", Quantity.POWER))


async def test_bad_input_is_counted_and_never_crashes(
    shelly_broker: Mosquitto, base_topic: str, plus1pm: ShellySim
) -> None:
    source = _source(shelly_broker, base_topic, [{"prefix": plus1pm.prefix, "id": "heater"}])
    events = Events("shelly")
    async for task in _running(source, events):
        await events.wait_for(lambda _: 1203.4 in events.values("shelly_heater", Quantity.POWER))
        await plus1pm.publish_raw("events/rpc", b'{"src": "x", "method": "NotifyStatus", "params": {"switch:0"')
        await plus1pm.publish_raw("online", b"perhaps")
        await plus1pm.change({"flux_capacitor:0": {"gw": 1.21}})
        await plus1pm.change({"switch:0": {"voltage": "high"}})
        await plus1pm.change({"switch:0": {"apower": 77.0}})
        await events.wait_for(lambda _: 77.0 in events.values("shelly_heater", Quantity.POWER))
        errors = events.ctx.stats.errors
        assert errors["parse"] == 2
        assert errors["unknown_component"] == 1
        assert errors["bad_field"] == 1
        assert not task.done()


async def test_relay_set_with_toggle_after_and_timeout(shelly_broker: Mosquitto, plus1pm: ShellySim) -> None:
    cfg = _bridge_config(shelly_broker, "relay", {"type": "simulated", "id": "x"})
    async with shelly_rpc_session(cfg.mqtt, "flex-relay-test", timeout_s=5) as rpc:
        relay = ShellyRelay(rpc, plus1pm.prefix, 0)
        assert await relay.is_on() is True
        started = time.monotonic()
        assert await relay.set(False, toggle_after_s=1.0) is True
        assert plus1pm.status["switch:0"]["output"] is False
        assert plus1pm.status["switch:0"]["timer_duration"] == 1.0
        while not plus1pm.status["switch:0"]["output"]:  # the device turns it back on by itself
            assert time.monotonic() - started < 60  # a hang bound only
            await asyncio.sleep(0.05)
        assert plus1pm.status["switch:0"]["source"] == "timer"  # by its toggle_after, not a command
        with pytest.raises(ShellyRpcError, match="not found"):
            await ShellyRelay(rpc, plus1pm.prefix, 3).set(True)
        plus1pm.answer_rpc = False
        with pytest.raises(SourceTimeoutError, match=plus1pm.prefix):
            await relay.set(True, timeout_s=0.5)


async def test_relay_is_a_home_assistant_switch(shelly_broker: Mosquitto, base_topic: str, plus1pm: ShellySim) -> None:
    source = _source(shelly_broker, base_topic, [{"prefix": plus1pm.prefix, "id": "heater"}])
    # the source describes the switch, the HA sink announces it (as in the bridge)
    sink = HomeAssistantSink(source.bridge)
    events = Events("shelly", sink.catalog)
    config_topic = f"{base_topic}_ha/switch/hems/hems_shelly_heater_relay/config"
    state_topic = f"{base_topic}/shelly/shelly_heater/relay"
    await sink.start()
    async with recording(shelly_broker, f"{base_topic}_ha/#", f"{base_topic}/#") as rec:
        async for _ in _running(source, events):
            await rec.wait_for(lambda r: config_topic in r.last and r.last.get(state_topic) == b"ON")
            config = rec.json(config_topic)
            assert config["unique_id"] == "hems_home_shelly_heater_relay"
            assert config["command_topic"] == f"{state_topic}/set"
            assert config["device"]["identifiers"] == ["hems_home_shelly_heater"]
            assert [a["topic"] for a in config["availability"]] == [
                f"{base_topic}/bridge/availability",
                f"{base_topic}/meter/shelly_heater/availability",
            ]
            async with client_for(shelly_broker, "observer") as ha:
                await ha.publish(f"{state_topic}/set", b"OFF", qos=1)
            await rec.wait_for(lambda r: r.last.get(state_topic) == b"OFF")
            assert plus1pm.status["switch:0"]["output"] is False
            assert source.relay("shelly_heater").prefix == plus1pm.prefix
    await sink.close()


async def test_multichannel_and_three_phase_and_discovery(shelly_broker: Mosquitto, base_topic: str) -> None:
    pro3em = await _sim(shelly_broker, "pro3em")
    proem = await _sim(shelly_broker, "proem")
    mini = await _sim(shelly_broker, "pmminig3")
    try:
        source = _source(
            shelly_broker, base_topic, [{"prefix": proem.prefix, "id": "main", "channels": {1: "solar"}}],
            discover=True,
        )  # fmt: skip
        events = Events("shelly")
        grid = f"shelly_{pro3em.prefix.replace('-', '_')}"
        async for _ in _running(source, events):
            await events.wait_for(lambda _: -1500.0 in events.values("solar", Quantity.POWER))
            await events.wait_for(lambda _: -750.3 in events.values(f"{grid}_b", Quantity.POWER))
            await events.wait_for(
                lambda _: 85.2 in events.values(f"shelly_{mini.prefix.replace('-', '_')}", Quantity.POWER)
            )
            assert events.values("shelly_main", Quantity.ENERGY_EXPORT)[-1] == pytest.approx(2.59526)
            assert events.values(grid, Quantity.ENERGY_IMPORT)[-1] == pytest.approx(2.40075)
    finally:
        for sim in (pro3em, proem, mini):
            await sim.stop()


# -- provisioning (on the release's broker: one identity per device) ----------------------------------


def _release_mqtt(broker: ReleaseBroker) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=broker.port, username="bridge", password=broker.password("bridge"))


def _settings(broker: ReleaseBroker, **kwargs: Any) -> ProvisionSettings:
    return ProvisionSettings(
        mqtt_server=f"127.0.0.1:{broker.port}", identities=ShellyIdentityStore(broker.identities), timeout_s=5,
        identity_wait_s=10, **kwargs,
    )  # fmt: skip


async def test_provision_end_to_end_idempotent_and_wrong_password(release_broker: ReleaseBroker) -> None:
    sim = ShellySim("pro3em", admin_password="old-secret-1")
    await sim.start()
    mqtt = _release_mqtt(release_broker)
    try:
        wrong = await provision([sim.host], _settings(release_broker, admin_password="nope"), mqtt, 10)
        assert wrong[0].error is not None
        assert "authentication failed (wrong admin password)" in wrong[0].error
        assert "MQTT.SetConfig" not in sim.calls
        assert not (release_broker.identities / sim.device_id).exists(), "no identity for a device we may not configure"

        # a device provisioned by an earlier release, with its hourly script running and its last
        # hour retained on the broker
        sim.scripts[1] = {"name": RETIRED_SCRIPT_NAME, "enable": True, "running": True, "code": "// hourly"}
        hourly_topic = f"shelly/{sim.device_id}/{RETIRED_SCRIPT_TOPIC}"
        async with make_client(mqtt, "test-retained-hour") as client:
            await client.publish(hourly_topic, b'{"ts": 1720717200, "import_wh": 564}', qos=1, retain=True)
        settings = _settings(release_broker, admin_password="old-secret-1", new_admin_password="new-secret-2")
        first = (await provision([sim.host], settings, mqtt, 20))[0]
        assert (first.error, first.identity, first.mqtt, first.auth, first.script, first.reboot, first.online) == (
            None, "new", "set", "set", "removed", "yes", "yes",
        )  # fmt: skip
        assert sim.scripts == {}, "the retired hourly script is gone"
        # and so is its retained message: subscribed before `online`, it would have come first
        async with make_client(mqtt, "test-retained-check") as client:
            await client.subscribe(hourly_topic, qos=1)
            await client.subscribe(f"shelly/{sim.device_id}/online", qos=1)
            async with asyncio.timeout(10):
                async for message in client.messages:
                    assert str(message.topic) != hourly_topic, "the retained hour is still there"
                    break
        assert sim.calls.index("Script.Stop") < sim.calls.index("Script.Delete")
        password = (release_broker.identities / sim.device_id).read_text()
        assert sim.mqtt_config["user"] == sim.device_id
        assert sim.mqtt_config["pass"] == password
        assert sim.mqtt_config["client_id"] == sim.device_id
        assert sim.mqtt_config["topic_prefix"] == f"shelly/{sim.device_id}"
        assert sim.mqtt_config["rpc_ntf"] is True
        assert sim.mqtt_config["enable_control"] is True
        assert sim.reboots == 1

        calls_before = len(sim.calls)
        second = (await provision([sim.host], settings, mqtt, 20))[0]
        assert (second.error, second.identity, second.mqtt, second.auth, second.script, second.reboot) == (
            None, "kept", "unchanged", "unchanged", "-", "no",
        )  # fmt: skip
        assert second.online == "yes"
        assert sim.reboots == 1
        changing = {"MQTT.SetConfig", "Shelly.SetAuth", "Script.Delete", "Script.Create", "Shelly.Reboot"}
        assert not changing & set(sim.calls[calls_before:])
        assert (release_broker.identities / sim.device_id).read_text() == password, "same identity"
    finally:
        await sim.stop()


async def test_provision_lost_identity_is_made_anew_and_written_again(release_broker: ReleaseBroker) -> None:
    sim = ShellySim("plus1pm")
    await sim.start()
    mqtt = _release_mqtt(release_broker)
    try:
        assert (await provision([sim.host], _settings(release_broker), mqtt, 20))[0].ok
        old = (release_broker.identities / sim.device_id).read_text()
        (release_broker.identities / sim.device_id).unlink()  # e.g. the volume was recreated
        again = (await provision([sim.host], _settings(release_broker), mqtt, 20))[0]
        assert (again.error, again.identity, again.mqtt, again.reboot, again.online) == (
            None,
            "new",
            "set",
            "yes",
            "yes",
        )
        assert sim.mqtt_config["pass"] == (release_broker.identities / sim.device_id).read_text() != old
    finally:
        await sim.stop()


async def test_provision_reports_a_broker_that_does_not_take_the_identity(
    release_broker: ReleaseBroker, tmp_path: Path
) -> None:
    sim = ShellySim("plus1pm")
    await sim.start()
    try:
        settings = ProvisionSettings(
            mqtt_server=f"127.0.0.1:{release_broker.port}", identities=ShellyIdentityStore(tmp_path / "not-shared"),
            timeout_s=5, identity_wait_s=1,
        )  # fmt: skip
        result = (await provision([sim.host], settings, _release_mqtt(release_broker), 5))[0]
        assert result.error is not None
        assert "the broker did not accept the identity" in result.error
        assert str(tmp_path / "not-shared") in result.error
        assert "MQTT.SetConfig" not in sim.calls, "the device keeps a working config"
    finally:
        await sim.stop()


async def test_provision_cli_prints_table_without_secrets(release_broker: ReleaseBroker, tmp_path: Path) -> None:
    sim = ShellySim("plus1pm", admin_password="admin-pw-3")
    await sim.start()
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps({"mqtt": {"host": "127.0.0.1", "port": release_broker.port, "username": "bridge",
                             "password": "${MQTT_PASSWORD}"}})
    )  # fmt: skip
    fleet = tmp_path / "fleet.txt"
    fleet.write_text(f"# our fleet\n{sim.host}\n")
    # as in `balena device ssh <uuid> meter-bridge`: the broker's password file, not MQTT_PASSWORD
    env = {k: v for k, v in os.environ.items() if k != "MQTT_PASSWORD"}
    env |= {"MQTT_PASSWORD_FILE": str(release_broker.share / "bridge" / "password"),
            "SHELLY_IDENTITIES_DIR": str(release_broker.identities), "SHELLY_ADMIN_PASSWORD": "admin-pw-3"}  # fmt: skip
    cmd = [sys.executable, "-m", "meterbridge.cli", "shelly", "provision", "--config", str(config), "--from",
           str(fleet), "--mqtt-server", f"127.0.0.1:{release_broker.port}", "--wait-s", "20"]  # fmt: skip
    try:
        for identity, mqtt in (("new", "set"), ("kept", "unchanged")):
            proc = await asyncio.create_subprocess_exec(
                *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            out, err = await proc.communicate()
            text = out.decode() + err.decode()
            assert proc.returncode == 0, text
            header, row = text.splitlines()[0].split(), text.splitlines()[1].split()
            assert header[:5] == ["host", "device", "model", "identity", "mqtt"]
            assert (row[0], row[1], row[3], row[4], row[-1]) == (sim.host, sim.device_id, identity, mqtt, "ok")
            for secret in (release_broker.password(sim.device_id), release_broker.password("bridge"), "admin-pw-3"):
                assert secret not in text
        bad = await asyncio.create_subprocess_exec(
            *cmd, env={**env, "SHELLY_ADMIN_PASSWORD": "wrong"}, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await bad.communicate()
        assert bad.returncode == 1
        assert "authentication failed (wrong admin password)" in out.decode()
        fleet.write_text(f"{sim.host} {sim.device_id}\n")  # the old `HOST PREFIX` form
        old_form = await asyncio.create_subprocess_exec(*cmd, env=env, stderr=asyncio.subprocess.PIPE)
        _, err = await old_form.communicate()
        assert old_form.returncode == 2
        assert f"{fleet}:1: expected `HOST`" in err.decode()
    finally:
        await sim.stop()


async def test_a_frame_delivered_again_after_newer_ones_never_lowers_a_total(
    shelly_broker: Mosquitto, base_topic: str, plus1pm: ShellySim
) -> None:
    """Issue 25: QoS 1 delivered a Plus 1PM's older frame again after a reconnect; stamped with the
    time it arrived, its lower total (73.4647 -> 73.4644 kWh there) went to HA and InfluxDB as new."""
    source = _source(shelly_broker, base_topic, [{"prefix": plus1pm.prefix, "id": "heater"}], reemit_s=3600)
    events = Events("shelly")

    def frame(ts: float, wh: float, power: float) -> bytes:
        status = {"switch:0": {"id": 0, "apower": power, "aenergy": {"total": wh}}}
        return json.dumps({"src": plus1pm.device_id, "method": "NotifyStatus", "params": {"ts": ts, **status}}).encode()

    async for _ in _running(source, events):
        await events.wait_for(lambda _: events.values("shelly_heater", Quantity.ENERGY_IMPORT))
        now = time.time()
        await plus1pm.publish_raw("events/rpc", frame(now + 1, 12346.0, 50.0))
        await plus1pm.publish_raw("events/rpc", frame(now + 2, 12346.3, 60.0))
        await plus1pm.publish_raw("events/rpc", frame(now + 1, 12346.0, 50.0))  # delivered again
        await plus1pm.publish_raw("events/rpc", frame(now + 3, 12346.5, 70.0))
        await events.wait_for(lambda _: 70.0 in events.values("shelly_heater", Quantity.POWER))
        energies = events.values("shelly_heater", Quantity.ENERGY_IMPORT)
        assert energies[-3:] == [pytest.approx(12.346), pytest.approx(12.3463), pytest.approx(12.3465)]
        assert energies == sorted(energies)
        assert events.values("shelly_heater", Quantity.POWER)[-3:] == [50.0, 60.0, 70.0]
        readings = [e for e in events.items if isinstance(e, Reading) and e.quantity is Quantity.POWER]
        assert [r.ts.timestamp() for r in readings[-3:]] == pytest.approx([now + 1, now + 2, now + 3])
        assert events.ctx.stats.errors["stale_frame"] == 1
