"""The zigbee2mqtt service's entrypoint, run natively with POSIX sh (Debian's dash).

Zigbee2MQTT itself cannot run here (no Zigbee radio, no Docker): the entrypoint is run
with a stand-in command, and what it renders is validated against the settings schema
of the pinned Zigbee2MQTT release (fetched by `make setup`), resolving the `!file key`
references the way Zigbee2MQTT's settings.ts does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from helpers import image_users
from helpers.usb_sysfs import CP2102_GENERIC, EMU2, FTDI_CABLE, SONOFF_ZBDONGLE_E, FakeSysfs

REPO = Path(__file__).resolve().parents[2]
SERVICE = REPO / "services" / "zigbee2mqtt"
SCRIPT = SERVICE / "hems-entrypoint.sh"
# Zigbee2MQTT's built-in defaults, which must never reach a real network.
DEFAULT_NETWORK_KEY = [1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 13]


def _pinned_version() -> str:
    match = re.search(r"^FROM koenkk/zigbee2mqtt:(\d+\.\d+\.\d+)$", (SERVICE / "Dockerfile").read_text(), re.M)
    assert match, "the Dockerfile must pin an exact Zigbee2MQTT version"
    return match.group(1)


def _env(data: Path, adapter: str, **extra: str) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "ZIGBEE2MQTT_DATA": str(data), "ZIGBEE_ADAPTER": adapter}
    # keep the entrypoint's device-node making and idle marker inside the test's folder
    env.update(
        {
            "SYSFS_TTY_DIR": str(data.parent / "no-sysfs"),
            "DEV_DIR": str(data.parent / "dev"),
            "Z2M_IDLE_MARKER": str(data.parent / "idle"),
        }
    )
    env.update(
        {"ZIGBEE_RECHECK_S": "0.2", "Z2M_MQTT_USER": "zigbee2mqtt_hems", "MQTT_ZIGBEE2MQTT_PASSWORD": "s3cr'et pw"}
    )
    env.update(extra)
    return env


# The stand-in for Zigbee2MQTT: proves the entrypoint exec'd the image's command.
STAND_IN = [sys.executable, "-c", "import os; print('STARTED', os.environ['ZIGBEE2MQTT_DATA'])"]


def _run(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SCRIPT), *STAND_IN], env=env, capture_output=True, text=True, timeout=timeout)


def _start(env: dict[str, str], out: Path) -> subprocess.Popen[str]:
    """The entrypoint in the background, its output (stdout and stderr) to the file `out`."""
    with out.open("w") as sink:
        return subprocess.Popen(
            ["sh", str(SCRIPT), *STAND_IN], env=env, stdout=sink, stderr=subprocess.STDOUT, text=True
        )


def _wait_idle(process: subprocess.Popen[str], env: dict[str, str], out: Path) -> str:
    """Wait until the entrypoint idles (marker made, the line said); its output so far.

    Waited for, not assumed after a sleep: a loaded machine may take seconds to get there (and a
    device plugged in before the first check would be found without idling). 60 s: a hang bound.
    """
    deadline = time.monotonic() + 60
    while not (Path(env["Z2M_IDLE_MARKER"]).exists() and "Zigbee2MQTT is idle" in out.read_text()):
        assert process.poll() is None, f"the entrypoint must idle, not exit: {out.read_text()}"
        assert time.monotonic() < deadline, f"not idle within 60 s: {out.read_text()}"
        time.sleep(0.05)
    return out.read_text()


def _resolved(data: Path) -> dict[str, Any]:
    """configuration.yaml with `!file key` references and devices/groups files read in, as Zigbee2MQTT does."""
    config = yaml.safe_load((data / "configuration.yaml").read_text())

    def value(text: Any) -> Any:
        match = re.fullmatch(r"!(.*) (.*)", text) if isinstance(text, str) else None
        if not match:
            return text
        return yaml.safe_load((data / f"{match.group(1)}.yaml").read_text())[match.group(2)]

    config["mqtt"]["password"] = value(config["mqtt"]["password"])
    config["advanced"]["network_key"] = value(config["advanced"]["network_key"])
    if "auth_token" in config["frontend"]:
        config["frontend"]["auth_token"] = value(config["frontend"]["auth_token"])
    for key in ("devices", "groups"):
        config[key] = yaml.safe_load((data / config[key]).read_text())
    return config


def test_idles_without_an_adapter_then_starts_when_it_appears(tmp_path: Path) -> None:
    adapter = tmp_path / "ttyUSB0"
    env = _env(tmp_path / "data", str(adapter))
    process = _start(env, tmp_path / "out")
    try:
        _wait_idle(process, env, tmp_path / "out")  # the healthcheck counts idling as healthy
        time.sleep(1.0)  # several re-checks
        assert process.poll() is None, "the entrypoint must idle, not exit"
        assert not (tmp_path / "data" / "configuration.yaml").exists()
        adapter.touch()  # the dongle is plugged in
        process.wait(timeout=60)
    finally:
        process.kill()
    lines = (tmp_path / "out").read_text().splitlines()
    assert lines[0] == (
        f"hems-zigbee2mqtt: no Zigbee adapter at {adapter}; Zigbee2MQTT is idle, checking again every 0.2 s"
    )
    assert sum("Zigbee2MQTT is idle" in line for line in lines) == 1, "one clear line, not one per check"
    assert lines[-1] == f"STARTED {tmp_path / 'data'}"
    assert process.returncode == 0
    assert not (tmp_path / "idle").exists(), "running, no longer idle"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"ZIGBEE_ADAPTER": ""}, "no known Zigbee coordinator is plugged in"),
        ({"MQTT_ZIGBEE2MQTT_PASSWORD": ""}, "no MQTT password"),
        ({"ZIGBEE_CHANNEL": "27"}, "is not a Zigbee channel"),
        ({"ZIGBEE_ADAPTER_TYPE": "cc2531"}, "is not one of"),
    ],
)
def test_idles_with_a_clear_reason(tmp_path: Path, extra: dict[str, str], reason: str) -> None:
    (tmp_path / "tty").touch()
    env = _env(tmp_path / "data", str(tmp_path / "tty"), **extra)
    process = _start(env, tmp_path / "out")
    try:
        out = _wait_idle(process, env, tmp_path / "out")
    finally:
        process.kill()
        process.wait()
    assert reason in out
    assert not (tmp_path / "data" / "configuration.yaml").exists()


def test_renders_a_valid_config_without_default_secrets(tmp_path: Path) -> None:
    data, adapter = tmp_path / "data", tmp_path / "usb-ITead_Sonoff_Zigbee_3.0_USB_Dongle_Plus-if00-port0"
    adapter.touch()
    env = _env(data, str(adapter), ZIGBEE_ADAPTER_TYPE="zstack", ZIGBEE_CHANNEL="15")
    result = _run(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "STARTED" in result.stdout
    text = (data / "configuration.yaml").read_text()
    assert "s3cr" not in text, "the password must not be in configuration.yaml"
    assert "GENERATE" not in text
    config = _resolved(data)
    assert config["mqtt"]["user"] == "zigbee2mqtt_hems"
    assert config["mqtt"]["password"] == "s3cr'et pw"
    assert config["mqtt"]["server"] == "mqtt://mqtt:1883"
    assert config["serial"] == {"port": str(adapter), "adapter": "zstack"}
    assert config["advanced"]["channel"] == 15
    # served by nginx at /zigbee2mqtt/ behind the admin login (test_release_nginx)
    assert config["frontend"] == {"enabled": True, "port": 8080, "base_url": "/zigbee2mqtt"}
    key = config["advanced"]["network_key"]
    assert len(key) == 16
    assert key != DEFAULT_NETWORK_KEY
    assert 1 <= config["advanced"]["pan_id"] <= 0x3FFE
    assert len(config["advanced"]["ext_pan_id"]) == 8
    assert oct((data / "secret.yaml").stat().st_mode & 0o777) == "0o600"
    assert oct((data / "network.yaml").stat().st_mode & 0o777) == "0o600"
    schema_file = REPO / ".cache" / f"zigbee2mqtt-{_pinned_version()}" / "settings.schema.json"
    assert schema_file.exists(), "run `make setup`: it fetches the pinned Zigbee2MQTT settings schema"
    jsonschema.validate(config, json.loads(schema_file.read_text()))

    # a restart keeps the network and what Zigbee2MQTT wrote (device names), re-renders the rest
    (data / "devices.yaml").write_text("'0x00124b0022aa0001':\n  friendly_name: kitchen/plug\n")
    network = (data / "network.yaml").read_text()
    result = _run({**env, "MQTT_ZIGBEE2MQTT_PASSWORD": "new", "Z2M_FRONTEND_PORT": "8099"})
    assert result.returncode == 0, result.stdout + result.stderr
    config = _resolved(data)
    assert (data / "network.yaml").read_text() == network
    assert config["devices"] == {"0x00124b0022aa0001": {"friendly_name": "kitchen/plug"}}
    assert config["mqtt"]["password"] == "new"
    assert config["frontend"]["port"] == 8099
    jsonschema.validate(config, json.loads(schema_file.read_text()))


@pytest.mark.skipif(os.geteuid() != 0, reason="the entrypoint makes device nodes only as root (as in the container)")
def test_finds_the_coordinator_by_usb_ids_and_never_a_meter_stick(tmp_path: Path) -> None:
    sysfs = FakeSysfs(tmp_path / "sys")
    # an EMU-2, an FTDI meter cable and a CP2102 on the ZBDongle-P's chip: none is a coordinator
    sysfs.plug(EMU2, "ttyACM0", (166, 0))
    sysfs.plug(FTDI_CABLE, "ttyUSB0", (188, 0))
    sysfs.plug(CP2102_GENERIC, "ttyUSB1", (188, 1))
    env = _env(tmp_path / "data", "", SYSFS_TTY_DIR=str(sysfs.tty_dir))
    process = _start(env, tmp_path / "out")
    try:
        _wait_idle(process, env, tmp_path / "out")  # idle: no coordinator among the sticks
        sysfs.plug(SONOFF_ZBDONGLE_E, "ttyUSB2", (188, 2))  # hot-plugged
        process.wait(timeout=60)
    finally:
        process.kill()
    out = (tmp_path / "out").read_text()
    assert "no known Zigbee coordinator is plugged in" in out
    assert process.returncode == 0, out
    config = _resolved(tmp_path / "data")
    # herdsman's adapter and serial options for the Dongle-E (tests/integration/test_zigbee_coordinators.py)
    assert config["serial"] == {"port": str(tmp_path / "dev" / "ttyUSB2"), "adapter": "ember", "rtscts": False}
    by_id = "usb-ITEAD_SONOFF_Zigbee_3.0_USB_Dongle_Plus_V2_20231234567-if00-port0"
    assert os.readlink(tmp_path / "dev" / "serial" / "by-id" / by_id) == "../../ttyUSB2"


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root (as in the container)")
def test_runs_zigbee2mqtt_without_root_or_capabilities(tmp_path: Path) -> None:
    adapter = tmp_path / "tty"
    adapter.touch()
    show = "import os; print('RUNAS', os.getuid(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])"
    # the image's user (scripts/image-users.tsv: zigbee2mqtt, 8080, group dialout)
    user = image_users.require("zigbee2mqtt")["zigbee2mqtt"]
    env = _env(tmp_path / "data", str(adapter), Z2M_RUN_USER=user.test_name)
    result = subprocess.run(
        ["sh", str(SCRIPT), sys.executable, "-c", show], env=env, capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stdout + result.stderr
    uid = user.uid
    assert f"RUNAS {uid} 0000000000000000" in result.stdout
    assert (tmp_path / "data" / "configuration.yaml").stat().st_uid == uid, "it owns its data"


def test_password_from_a_file_and_tcp_adapters(tmp_path: Path) -> None:
    secret = tmp_path / "z2m.pass"
    secret.write_text("from-file\n")
    env = _env(
        tmp_path / "data", "tcp://192.0.2.10:6638", MQTT_ZIGBEE2MQTT_PASSWORD="", Z2M_MQTT_PASSWORD_FILE=str(secret)
    )
    result = _run(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _resolved(tmp_path / "data")["mqtt"]["password"] == "from-file"


def test_shellcheck() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "shellcheck"), "--shell=sh", "--severity=style", "-x", str(SCRIPT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_dockerfile_uses_the_entrypoint_and_keeps_the_image_command() -> None:
    text = (SERVICE / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/usr/local/bin/hems-entrypoint.sh"]' in text
    # the official image's command: tini as PID 1, then node
    assert 'CMD ["/sbin/tini", "--", "node", "index.js"]' in text
    assert _pinned_version()
