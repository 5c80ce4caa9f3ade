"""`meter-bridge shelly logs DEVICE --for ...` as a child process against a simulated device on a real
Mosquitto: it turns the device's MQTT debug log on (Sys.SetConfig debug.mqtt), writes the lines
of `<prefix>/debug/log` to a file, and turns it off again when the window ends and on Ctrl-C
(SIGINT to the process) and when its SSH session drops (SIGHUP); a device left logging by a killed
earlier run is turned off by the next.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml

from helpers.mosquitto import Mosquitto
from helpers.shelly_sim import ShellySim
from integration.flexutil import wait_until

pytestmark = pytest.mark.slow


async def started_sim(broker: Mosquitto) -> ShellySim:
    sim = ShellySim("plus1pm")
    sim.mqtt_config["topic_prefix"] = f"shelly/{sim.device_id}"
    sim.configure_mqtt(f"{broker.host}:{broker.port}", "bridge", broker.password("bridge"))
    await sim.start()
    await sim.wait_connected()
    return sim


def write_config(path: Path, broker: Mosquitto, base: str) -> Path:
    path.write_text(yaml.safe_dump({"site": {"id": "home"}, "mqtt": broker.bridge_mqtt(base), "sources": []}))
    return path


async def logs(config: Path, device: str, out: Path, duration: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meterbridge.cli", "shelly", "logs", device, "--for", duration, "--out", str(out),
        "--config", str(config), stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def debug_on(sim: ShellySim) -> bool:
    return bool(sim.debug_config["mqtt"]["enable"])


async def test_logs_for_a_window_then_debug_off(broker: Mosquitto, base_topic: str, tmp_path: Path) -> None:
    sim = await started_sim(broker)
    try:
        out = tmp_path / "device.log"
        proc = await logs(write_config(tmp_path / "config.yaml", broker, base_topic), sim.device_id, out, "2s")
        await wait_until(lambda: debug_on(sim), 10, "debug log turned on")
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert not debug_on(sim)
        lines = out.read_text().splitlines()
        # the device sends 10 lines a second; how many fall in the window depends on the machine,
        # so: some were written, each whole and in the device's order, none left out between
        assert len(lines) >= 2, lines
        assert all(line.startswith(f"{sim.device_id} ") for line in lines)
        numbers = [int(line.split()[1]) for line in lines]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
        assert "debug log turned off again" in err.decode()
        sent = sim.debug_lines
        await asyncio.sleep(0.5)
        assert sim.debug_lines == sent, "the device stopped sending"
    finally:
        await sim.stop()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
async def test_ctrl_c_or_hangup_turns_debug_off(
    broker: Mosquitto, base_topic: str, tmp_path: Path, signum: signal.Signals
) -> None:
    sim = await started_sim(broker)
    try:
        config = write_config(tmp_path / "config.yaml", broker, base_topic)
        out = tmp_path / "device.log"
        proc = await logs(config, f"shelly/{sim.device_id}", out, "10m")
        await wait_until(lambda: debug_on(sim) and sim.debug_lines > 3, 10, "debug log on and sending")
        proc.send_signal(signum)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert not debug_on(sim)
        assert out.read_text().count("\n") >= 1

        # a run killed without a chance to clean up leaves the device logging; the next run ends it
        proc = await logs(config, sim.device_id, out, "10m")
        await wait_until(lambda: debug_on(sim), 10, "debug log on again")
        proc.kill()
        await proc.wait()
        assert debug_on(sim)
        proc = await logs(config, sim.device_id, out, "1s")
        await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
        assert not debug_on(sim)
    finally:
        await sim.stop()


async def test_logs_of_an_unknown_or_offline_device_fail_cleanly(
    broker: Mosquitto, base_topic: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml", broker, base_topic)
    proc = await logs(config, "not-a-device", tmp_path / "x.log", "1s")
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "not a Shelly device id" in err.decode()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meterbridge.cli", "shelly", "logs", "shellyplus1pm-000000000000", "--for", "1s",
        "--rpc-timeout", "1", "--out", str(tmp_path / "y.log"), "--config", str(config),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert "no reply to Sys.SetConfig" in err.decode()
    assert "Traceback" not in err.decode()
