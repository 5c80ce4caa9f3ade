"""The meter-bridge image's entrypoint, run natively against the broker the mqtt entrypoint set
up: the password travels only through the shared credentials volume (MQTT_PASSWORD_FILE), the
first-boot config is written and checked, BRIDGE_CONFIG replaces it, serial nodes are made."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from helpers import image_users
from helpers.emu2_sim import Emu2Simulator
from helpers.homeassistant import HomeAssistant
from helpers.influx_mgmt_double import InfluxMgmtDouble
from helpers.net import free_port
from helpers.release import REPO, ReleaseBroker, Volumes, image_environment, read_only, release_bridge_config_text
from helpers.usb_sysfs import EMU2, FakeSysfs, pty_numbers
from release.test_release_influx_tokens import run_provision

BRIDGE_DIR = REPO / "services" / "meter-bridge"
ENTRYPOINT = BRIDGE_DIR / "entrypoint.sh"
EMU2_BY_ID = "usb-Rainforest_Automation__Inc._RFA-Z105-2_HW2.7.3_EMU-2-if00"
BRIDGE_GID = image_users.image_users()["meter-bridge"].gid


def default_config(root: Path) -> str:
    """The shipped default configuration with every file it keeps in `root`'s data directory: in the
    image /data is the bridge-data volume, here it would be the machine's own /data."""
    return release_bridge_config_text(root / "data")


def environment(root: Path, broker_port: int, **variables: str) -> dict[str, str]:
    """The image's ENV pointed at `root`: run as root, the entrypoint drops to `bridge` (`root` must
    be a directory `bridge` can traverse: a `volumes` root)."""
    return {
        # meter-bridge is on the image's PATH; here it is in the test's virtualenv
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "BRIDGE_CONFIG_FILE": str(root / "data" / "config.yaml"),
        "BRIDGE_DEFAULT_CONFIG": str(BRIDGE_DIR / "default-config.yaml"),
        "BRIDGE_HEALTH_PORT": str(free_port()),
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(broker_port),
        "MQTT_PASSWORD_FILE": str(root / "creds" / "password"),
        "MQTT_WAIT_S": "2",
        "SYSFS_TTY_DIR": str(root / "sys"),
        "DEV_DIR": str(root / "dev"),
        **variables,
    }


async def test_bridge_connects_with_the_shared_password(volumes: Volumes, release_broker: ReleaseBroker) -> None:
    image_users.require("meter-bridge")
    root = volumes.root
    # the bridge container mounts mqtt-creds-bridge read-only at /run/hems/mqtt
    creds = release_broker.share / "bridge"
    env = environment(root, release_broker.port, MQTT_PASSWORD_FILE=str(creds / "password"))
    # the configuration the operator keeps in the data volume (first boot: see the test below)
    (root / "data").mkdir()
    (root / "data" / "config.yaml").write_text(default_config(root))
    log = (root / "bridge.log").open("wb")
    topic = "hems/bridge/availability"
    async with aiomqtt.Client(
        "127.0.0.1", release_broker.port, username="homeassistant", password=release_broker.password("homeassistant")
    ) as observer:
        await observer.subscribe(topic, qos=1)
        # compose mounts mqtt-creds-bridge into the bridge read-only
        argv = read_only(["sh", str(ENTRYPOINT), "run"], [creds])
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
        try:

            async def online() -> None:
                async for message in observer.messages:
                    if message.payload == b"online":
                        return

            try:
                await asyncio.wait_for(online(), 30)
            except TimeoutError:
                raise AssertionError((root / "bridge.log").read_text()) from None
            status = subprocess.run(
                ["sh", str(ENTRYPOINT), "status"], env=env, capture_output=True, text=True, timeout=60
            )
            assert status.returncode == 0, status.stdout + status.stderr
        finally:
            process.terminate()
            process.wait(15)
            log.close()
    assert release_broker.password("bridge") not in (root / "bridge.log").read_text()


def test_bridge_config_variable_replaces_the_file(volumes: Volumes) -> None:
    image_users.require("meter-bridge")
    root = volumes.root
    (root / "creds").mkdir()
    (root / "creds" / "password").write_text("secret-from-volume")
    good = "mqtt: {host: 127.0.0.1, username: bridge, password: '${MQTT_PASSWORD}'}\nsources: []\n"
    env = environment(root, 1883, BRIDGE_CONFIG=good)
    result = subprocess.run(["sh", str(ENTRYPOINT), "check-config"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (root / "data" / "config.yaml").read_text().rstrip() == good.rstrip()


def test_bad_config_stops_the_start_with_file_and_line(volumes: Volumes) -> None:
    image_users.require("meter-bridge")
    root = volumes.root
    (root / "creds").mkdir()
    (root / "creds" / "password").write_text("secret-from-volume")
    bad = "mqtt: {username: bridge, password: '${MQTT_PASSWORD}'}\nsources:\n  - {type: nosuch, id: x}\n"
    env = environment(root, 1883, BRIDGE_CONFIG=bad)
    result = subprocess.run(["sh", str(ENTRYPOINT), "run"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "config.yaml:3:" in result.stderr


def test_missing_password_is_a_config_error(volumes: Volumes) -> None:
    image_users.require("meter-bridge")
    root = volumes.root
    env = environment(root, 1883)
    result = subprocess.run(["sh", str(ENTRYPOINT), "run"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "MQTT_PASSWORD" in result.stderr
    assert "waiting for the MQTT password" in result.stderr
    config = (root / "data" / "config.yaml").read_text()
    assert config == (BRIDGE_DIR / "default-config.yaml").read_text(), "first boot wrote the default"
    assert (root / "data").stat().st_uid == image_users.image_users()["meter-bridge"].uid, "the data volume is bridge's"


def test_only_the_documented_secrets_come_from_files(volumes: Volumes) -> None:
    """MQTT_PASSWORD and INFLUX_TOKEN come from their *_FILE (docs/deploy.md); every other *_FILE
    variable names a file on purpose and is left alone: SSL_CERT_FILE must not become a 200 kB
    SSL_CERT, and BRIDGE_CONFIG_FILE must not turn the config on the device into BRIDGE_CONFIG
    (which the entrypoint would then take for the operator's variable). `meter-bridge` here is a
    stand-in that records the environment the entrypoint hands it."""
    image_users.require("meter-bridge")
    root = volumes.root
    (root / "creds").mkdir()
    (root / "creds" / "password").write_text("secret-from-volume\n")
    (root / "bridge.token").write_text("token-from-provision\n")
    (root / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot a secret\n-----END CERTIFICATE-----\n")
    (root / "admin.token").write_text("influx-provision's, not the bridge's\n")
    (root / "data").mkdir()
    on_device = "site: {id: second_boot}\n"
    (root / "data" / "config.yaml").write_text(on_device)
    stand_in = root / "bin" / "meter-bridge"
    stand_in.parent.mkdir()
    # the system's Python: the stand-in runs as `bridge`, which may not reach the test's own (a
    # pyenv build under a 0700 /root on the CI machines)
    stand_in.write_text(
        f"#!/bin/sh\nexec {shutil.which('python3', path='/usr/bin') or sys.executable} -c "
        '\'import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], "w"))\' "$ENV_DUMP"\n'
    )
    stand_in.chmod(0o755)
    (root / "env.json").touch(mode=0o666)
    (root / "env.json").chmod(0o666)
    env = environment(
        root,
        1883,
        PATH=f"{stand_in.parent}:{os.environ['PATH']}",
        ENV_DUMP=str(root / "env.json"),
        INFLUX_TOKEN_FILE=str(root / "bridge.token"),
        SSL_CERT_FILE=str(root / "ca.pem"),
        INFLUX_ADMIN_TOKEN_FILE=str(root / "admin.token"),
    )
    result = subprocess.run(["sh", str(ENTRYPOINT), "status"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads((root / "env.json").read_text())
    assert seen["MQTT_PASSWORD"] == "secret-from-volume"
    assert seen["INFLUX_TOKEN"] == "token-from-provision"
    assert {"SSL_CERT", "BRIDGE_CONFIG", "INFLUX_ADMIN_TOKEN"}.isdisjoint(seen), sorted(seen)
    assert seen["SSL_CERT_FILE"] == str(root / "ca.pem")
    assert "BRIDGE_CONFIG variable" not in result.stderr
    assert (root / "data" / "config.yaml").read_text() == on_device


async def test_influx_provision_starts_without_waiting_for_the_broker(
    compose: dict[str, Any], volumes: Volumes
) -> None:
    """influx-provision runs the bridge's image (its entrypoint, its ENV, as `bridge`) with compose's
    command, environment and volumes, and mounts no MQTT credentials: it does not use the broker, so
    it must not wait MQTT_WAIT_S (120 s in the image) for a password file that never comes. InfluxDB
    2's management API is a CONTRACT DOUBLE (helpers.influx_mgmt_double: it cannot run here)."""
    image_users.require("meter-bridge")
    service = compose["services"]["influx-provision"]
    assert service["build"]["dockerfile"] == "meter-bridge/Dockerfile"
    assert not any("mqtt-creds" in volume for volume in service["volumes"]), "it mounts no MQTT password"
    assert int(image_environment(BRIDGE_DIR / "Dockerfile")["MQTT_WAIT_S"]) > 0, "the image waits for the broker"
    double = InfluxMgmtDouble()
    await double.start()
    try:
        secrets = volumes("influx-secrets")
        (secrets / "admin.token").write_text(double.admin_token)  # as the influxdb entrypoint leaves it
        os.chown(secrets / "admin.token", 0, BRIDGE_GID)
        (secrets / "admin.token").chmod(0o640)
        result = await run_provision(compose, volumes, double.url)
    finally:
        await double.stop()
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert b"waiting for the MQTT password" not in result.stderr
    assert (volumes("influx-tokens-bridge") / "bridge.token").stat().st_size > 0


@pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes needs root (as in the container)")
def test_serial_device_nodes_for_present_adapters(volumes: Volumes) -> None:
    image_users.require("meter-bridge")
    root = volumes.root
    for name, numbers in (("ttyACM0", "166:0"), ("ttyUSB1", "188:1")):
        (root / "sys" / name).mkdir(parents=True)
        (root / "sys" / name / "dev").write_text(numbers + "\n")
    (root / "sys" / "ttyS0").mkdir()  # not a USB adapter: ignored
    (root / "sys" / "ttyS0" / "dev").write_text("4:64\n")
    (root / "dev").mkdir()
    (root / "creds").mkdir()
    (root / "creds" / "password").write_text("secret-from-volume")
    env = environment(root, 1883)
    result = subprocess.run(["sh", str(ENTRYPOINT), "check-config"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    acm = (root / "dev" / "ttyACM0").stat()
    assert stat.S_ISCHR(acm.st_mode)
    assert (os.major(acm.st_rdev), os.minor(acm.st_rdev)) == (166, 0)
    usb = (root / "dev" / "ttyUSB1").stat()
    assert (os.major(usb.st_rdev), os.minor(usb.st_rdev)) == (188, 1)
    assert not (root / "dev" / "ttyS0").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the entrypoint keeps device nodes only as root (as in the container)")
@pytest.mark.parametrize("by", ["by-id", "usb-ids"])
async def test_emu2_reaches_the_broker_through_the_entrypoint_and_survives_a_replug(
    volumes: Volumes, release_broker: ReleaseBroker, by: str, homeassistant_factory: Callable[..., HomeAssistant]
) -> None:
    """The EMU-2 is a simulator on a pseudo-terminal, listed in a fake sysfs as the kernel lists a
    Rainforest stick; the entrypoint's usb-serial sync gives it its udev by-id name. The bridge
    reads it by that name, or finds it by its USB ids, and reads it again after a replug that
    moves it from ttyACM0 to ttyACM1. By name, the pinned Home Assistant (user `homeassistant`
    on the release broker) shows the reading before and after the replug."""
    image_users.require("meter-bridge")
    root = volumes.root
    home = homeassistant_factory(mqtt=release_broker, mqtt_user="homeassistant") if by == "by-id" else None

    async def in_home_assistant(expected: float) -> None:
        if home is None:
            return
        state = None
        for _ in range(60):
            state = (await home.rest("GET", "/api/states/sensor.hems_grid_power"))["state"]
            if state not in ("unknown", "unavailable") and float(state) == expected:
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"sensor.hems_grid_power is {state}, not {expected}")

    sysfs, dev = FakeSysfs(root / "sys"), root / "dev"
    dev.mkdir()
    sim = Emu2Simulator(root / "emu2").start()

    def plug(tty: str) -> None:
        # the node: a pseudo-terminal opens only through devpts, so it stands in for the node the
        # kernel (or usb-serial.sh's mknod, tested in test_release_usb_serial) makes on a device
        # node first, then sysfs: the sync loop leaves a symlink alone, and never sees the stick
        # without its node (it would make a real node, which cannot open a pseudo-terminal)
        slave = os.readlink(sim.port)
        # what the kernel and udev give a ttyACM node: root:dialout 0660 (`bridge` is in dialout)
        os.chown(slave, 0, grp.getgrnam("dialout").gr_gid)
        os.chmod(slave, 0o660)
        (dev / tty).symlink_to(slave)
        sysfs.plug(EMU2, tty, pty_numbers(slave))

    plug("ttyACM0")
    port = f"\n    port: {dev}/serial/by-id/{EMU2_BY_ID}" if by == "by-id" else ""
    config = default_config(root).replace(
        "sources: []", f"sources:\n  - type: emu2\n    id: grid{port}\n    demand_interval_s: 1"
    )
    env = environment(
        root,
        release_broker.port,
        MQTT_PASSWORD_FILE=str(release_broker.share / "bridge" / "password"),
        SYSFS_TTY_DIR=str(sysfs.tty_dir),
        BRIDGE_CONFIG=config,
        USB_SCAN_S="0.3",
    )
    log = (root / "bridge.log").open("wb")
    async with aiomqtt.Client(
        "127.0.0.1", release_broker.port, username="homeassistant", password=release_broker.password("homeassistant")
    ) as observer:
        await observer.subscribe("hems/meter/grid", qos=1)

        async def power(expected: float) -> None:
            async for message in observer.messages:
                if json.loads(bytes(message.payload)).get("power") == expected:
                    return

        process = subprocess.Popen(["sh", str(ENTRYPOINT), "run"], env=env, stdout=log, stderr=log)
        try:
            await asyncio.wait_for(power(512.0), 30)
            await in_home_assistant(512.0)
            sim.unplug()
            sysfs.unplug("ttyACM0")
            (dev / "ttyACM0").unlink()
            sim.meter.demand_w = 777.0
            sim.replug()  # held open by the bridge, the old name is not reused: ttyACM1
            plug("ttyACM1")
            await asyncio.wait_for(power(777.0), 45)
            await in_home_assistant(777.0)
            # found by its USB ids, the bridge may read the new node before the entrypoint's sync
            # loop (every USB_SCAN_S) has moved the by-id link: wait for the loop, while it runs
            link = dev / "serial" / "by-id" / EMU2_BY_ID
            for _ in range(100):
                if os.path.islink(link) and os.readlink(link) == "../../ttyACM1":
                    break
                await asyncio.sleep(0.3)
        finally:
            process.terminate()
            process.wait(15)
            log.close()
            sim.stop()
    assert os.readlink(dev / "serial" / "by-id" / EMU2_BY_ID) == "../../ttyACM1"
