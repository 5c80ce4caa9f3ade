"""Shelly, least privilege, end to end, on the release's own broker (services/mosquitto/entrypoint.sh
run natively) and a real `meter-bridge run`: two simulated Shellys provisioned with the README's
command reach the bridge's `hems/meter/<id>` state with the identities provisioning gave them,
and the pinned Home Assistant (MQTT user `homeassistant` on that broker) as entities;
neither can write the other's topics nor command the other's relay (asserted on subscribers: a
forbidden publish still returns success in MQTT 3.1.1); provisioning again changes nothing.

The README command is run as written except that the test adds `--config` (in the container the
default, /data/config.yaml, is the bridge's own) and puts its hosts and broker in place of the
example addresses."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from helpers.bridgeproc import BridgeProcess
from helpers.homeassistant import HomeAssistant
from helpers.release import REPO, ReleaseBroker
from helpers.shelly_sim import ShellySim

pytestmark = [pytest.mark.slow, pytest.mark.homeassistant]

ADMIN_PASSWORD = "admin-pw-e2e-1"


def readme_provision_command() -> list[str]:
    """The provisioning command of the README's Shelly section, as words (variables first)."""
    section = (REPO / "README.md").read_text().split("### Shelly", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None, "the README's Shelly section has a sh block"
    lines = [
        line for line in block.group(1).replace("\\\n", " ").splitlines() if "meter-bridge shelly provision" in line
    ]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def as_run_here(words: list[str], hosts: list[str], server: str, config: Path) -> tuple[dict[str, str], list[str]]:
    """The README command's variables and argv, with our hosts, broker and config."""
    env = {}
    while "=" in words[0]:
        name, _, _ = words.pop(0).partition("=")
        env[name] = ADMIN_PASSWORD if name == "SHELLY_ADMIN_PASSWORD" else ""
    assert words[:3] == ["meter-bridge", "shelly", "provision"]
    argv: list[str] = []
    example_hosts = 0
    rest = iter(words[3:])
    for word in rest:
        if word == "--mqtt-server":
            argv += [word, server]
            next(rest)
        elif re.fullmatch(r"\d+\.\d+\.\d+\.\d+", word):
            example_hosts += 1
        else:
            argv.append(word)
    assert example_hosts == len(hosts), "one simulated device per example address"
    cmd = [sys.executable, "-m", "meterbridge.cli", "shelly", "provision", *hosts, *argv, "--config", str(config)]
    return env, cmd


async def run(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def arriving_until(sub: aiomqtt.Client, last: str) -> list[str]:
    """Topics of what is published to `sub` (retained messages left out) up to and with `last`.

    `last` is sent after everything else by the same client: the broker keeps one client's
    messages in order to a subscriber, so whatever it lets through arrives before `last`. Waited
    for by that order, not for a time (the bound only stops a hang).
    """
    seen: list[str] = []
    async with asyncio.timeout(60):
        async for message in sub.messages:
            if not message.retain:
                seen.append(str(message.topic))
            if str(message.topic) == last:
                break
    return seen


async def test_provisioned_shellys_reach_the_bridge_and_cannot_touch_each_other(
    tmp_path: Path, homeassistant_factory: Callable[..., HomeAssistant]
) -> None:
    # two unprovisioned Plus 1PMs, one with an admin password
    heater = ShellySim("plus1pm", admin_password=ADMIN_PASSWORD)
    pump = ShellySim("plus1pm")
    for sim in (heater, pump):
        await sim.start()
    broker = ReleaseBroker(tmp_path / "mqtt")
    broker.start()
    bridge_password = broker.password("bridge")
    bridge = BridgeProcess(
        tmp_path / "bridge",
        "site: {id: home}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bridge, password: '${{MQTT_PASSWORD}}'}}\n"
        "health: {port: {health_port}}\n"
        "homeassistant: {min_interval_s: 0}\n"
        "sources:\n  - {type: shelly, id: shelly, discover: true, reemit_s: 1}\n",
        env={"MQTT_PASSWORD": bridge_password},
    )
    # what the meter-bridge container has: the broker's password file and the identities volume
    env = {k: v for k, v in os.environ.items() if k != "MQTT_PASSWORD"}
    env |= {
        "MQTT_PASSWORD_FILE": str(broker.share / "bridge" / "password"),
        "SHELLY_IDENTITIES_DIR": str(broker.identities),
    }
    words = readme_provision_command()
    extra, cmd = as_run_here(words, [heater.host, pump.host], f"127.0.0.1:{broker.port}", bridge.config_file)
    env |= extra
    ha_password = broker.password("homeassistant")

    def ha() -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", broker.port, username="homeassistant", password=ha_password)

    try:
        bridge.start()
        code, table = await run(cmd, env)
        assert code == 0, table
        rows = {line.split()[1]: line.split() for line in table.splitlines()[1:3]}
        for sim in (heater, pump):
            assert rows[sim.device_id][3:5] == ["new", "set"], table
            assert sim.mqtt_config["user"] == sim.device_id
            assert sim.mqtt_config["topic_prefix"] == f"shelly/{sim.device_id}"
            assert sim.mqtt_config["pass"] == (broker.identities / sim.device_id).read_text()
            assert sim.mqtt_config["pass"] not in table
        assert heater.mqtt_config["pass"] != pump.mqtt_config["pass"]

        heater_id = f"shelly_{heater.device_id.replace('-', '_')}"
        pump_id = f"shelly_{pump.device_id.replace('-', '_')}"
        async with ha() as sub:
            await sub.subscribe(f"hems/meter/{heater_id}", qos=1)
            await sub.subscribe(f"hems/meter/{pump_id}", qos=1)
            states: dict[str, dict[str, float]] = {}
            async with asyncio.timeout(20):
                async for message in sub.messages:
                    assert isinstance(message.payload, bytes)
                    states[str(message.topic)] = json.loads(message.payload)
                    if len(states) == 2:
                        break
            assert states[f"hems/meter/{heater_id}"]["power"] == pytest.approx(1203.4)
            assert states[f"hems/meter/{pump_id}"]["power"] == pytest.approx(1203.4)

            # and in Home Assistant, as the release's HA user sees them
            home = homeassistant_factory(mqtt=broker, mqtt_user="homeassistant")
            wanted = {f"sensor.hems_{heater_id}_power", f"sensor.hems_{pump_id}_power", f"switch.hems_{pump_id}_relay"}
            found: dict[str, str] = {}
            for _ in range(60):
                found = {s["entity_id"]: s["state"] for s in await home.rest("GET", "/api/states")}
                if all(found.get(entity) not in (None, "unknown", "unavailable") for entity in wanted):
                    break
                await asyncio.sleep(0.5)
            assert float(found[f"sensor.hems_{heater_id}_power"]) == pytest.approx(1203.4), found
            assert found[f"switch.hems_{pump_id}_relay"] == "on", found

            # the heater, with its own credentials, tries to fake the pump's readings and to
            # switch the pump's relay; the bridge (which reads shelly/#) sees neither
            async with (
                aiomqtt.Client("127.0.0.1", broker.port, username="bridge", password=bridge_password) as spy,
                aiomqtt.Client(
                    "127.0.0.1", broker.port, username=heater.device_id, password=heater.mqtt_config["pass"],
                    identifier=f"{heater.device_id}-attacker",
                ) as attacker,
            ):  # fmt: skip
                await spy.subscribe(f"shelly/{pump.device_id}/#", qos=1)
                await spy.subscribe(f"shelly/{heater.device_id}/probe", qos=1)
                fake = {"src": pump.device_id, "method": "NotifyStatus", "params": {"switch:0": {"apower": 99999.0}}}
                await attacker.publish(f"shelly/{pump.device_id}/events/rpc", json.dumps(fake).encode(), qos=1)
                command = {"id": 1, "src": f"shelly/{heater.device_id}/x", "method": "Switch.Set",
                           "params": {"id": 0, "on": False}}  # fmt: skip
                await attacker.publish(f"shelly/{pump.device_id}/rpc", json.dumps(command).encode(), qos=1)
                await attacker.publish(f"shelly/{heater.device_id}/probe", b"own prefix", qos=1)  # control
                probe = f"shelly/{heater.device_id}/probe"
                assert await arriving_until(spy, probe) == [probe]
            assert pump.status["switch:0"]["output"] is True, "the pump's relay was not switched"
            assert "Switch.Set" not in pump.calls
            # the pump's state goes on (re-sent every second) with its own reading only: the next
            # two live states after the attempt, counted, not a time window (the bound stops a hang)
            powers: list[float] = []
            async with ha() as later, asyncio.timeout(60):
                await later.subscribe(f"hems/meter/{pump_id}", qos=1)
                async for message in later.messages:
                    if not message.retain and isinstance(message.payload, bytes):
                        powers.append(json.loads(message.payload)["power"])
                        if len(powers) == 2:
                            break
            assert 99999.0 not in powers

        # the home (HA) switches the pump's relay through the bridge: the RPC request goes to
        # shelly/<pump>/rpc and the reply comes back inside the pump's own prefix
        relay_topic = f"hems/shelly/{pump_id}/relay"
        async with ha() as sub:
            await sub.subscribe(f"hems/meter/{pump_id}", qos=1)
            await sub.subscribe(relay_topic, qos=1)
            await sub.publish(f"{relay_topic}/set", b"OFF", qos=1)
            async with asyncio.timeout(15):
                async for message in sub.messages:
                    if str(message.topic) == f"hems/meter/{pump_id}":
                        assert isinstance(message.payload, bytes)
                        assert json.loads(message.payload)["power"] != 99999.0
                    elif message.payload == b"OFF":
                        break
        assert pump.status["switch:0"]["output"] is False
        assert heater.status["switch:0"]["output"] is True

        # provisioning again: same identities, no new users, nothing written to the devices
        before = {sim.device_id: (sim.reboots, len(sim.calls)) for sim in (heater, pump)}
        code, table = await run(cmd, env)
        assert code == 0, table
        for line in table.splitlines()[1:3]:
            assert line.split()[3:5] == ["kept", "unchanged"], table
        for sim in (heater, pump):
            assert sim.reboots == before[sim.device_id][0]
            assert not {"MQTT.SetConfig", "Shelly.Reboot"} & set(sim.calls[before[sim.device_id][1] :])
        assert sorted(p.name for p in broker.identities.iterdir()) == sorted([heater.device_id, pump.device_id])
        users = [line.split(":", 1)[0] for line in (broker.config / "passwd").read_text().splitlines()]
        assert sorted(users) == sorted(["bridge", "homeassistant", "zigbee2mqtt", "healthcheck", heater.device_id,
                                        pump.device_id])  # fmt: skip
    finally:
        for sim in (heater, pump):
            await sim.stop()
        bridge.stop()
        broker.stop()
