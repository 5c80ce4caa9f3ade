"""Health checks mean "restart me" (balenaEngine restarts an unhealthy container under
`restart: always`), so each one checks liveness only (issue 18). With a meter missing (the
EMU-2 unplugged, no Zigbee coordinator, no WiFi adapter), every service's healthcheck command,
as the release declares it (compose, else the Dockerfile's HEALTHCHECK), exits 0 when run
natively; `meter-bridge status` still reports the missing meter."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import image_users
from helpers.net import free_port, stop_process, wait_for_port
from helpers.release import REPO, ReleaseBroker, Volumes, release_bridge_config_text
from release.test_release_compose import dockerfile_of
from release.test_release_dockerfile_builder import instructions

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
BIN = Path(sys.executable).parent


def healthcheck(service: str) -> list[str]:
    """The service's healthcheck as Docker runs it: ["CMD", ...] or ["CMD-SHELL", "..."]."""
    declared: dict[str, Any] = COMPOSE["services"][service]
    if "healthcheck" in declared:
        return [str(part) for part in declared["healthcheck"]["test"]]
    for _, instruction in instructions(dockerfile_of(declared).read_text()):
        match = re.fullmatch(r"HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*", instruction)
        if match:
            return ["CMD", *json.loads(match.group(1))]
    raise AssertionError(f"{service}: no HEALTHCHECK in exec form")


def run_check(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a healthcheck command natively (the image's PATH is the test's virtualenv + system)."""
    env = {"PATH": f"{BIN}:{os.environ['PATH']}", **env}
    argv = ["sh", "-c", command[1]] if command[0] == "CMD-SHELL" else command[1:]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def from_repository(command: list[str], directory: Path) -> list[str]:
    """`command` with the scripts the image copies to /usr/local/bin/ taken from `directory`."""
    return [str(directory / part.removeprefix("/usr/local/bin/")) if part.startswith("/usr/local/bin/") else part
            for part in command]  # fmt: skip


def test_every_service_declares_one() -> None:
    for service in COMPOSE["services"]:
        assert healthcheck(service)[0] in {"CMD", "CMD-SHELL"}, service
    # the bridge's own report fails while a meter is stale: it must not be the healthcheck
    assert healthcheck("meter-bridge") == ["CMD", "meter-bridge", "status", "--live"]


@pytest.mark.skipif(
    os.geteuid() != 0, reason="the bridge's entrypoint keeps device nodes as root (as in the container)"
)
def test_meter_bridge_with_its_emu2_unplugged(volumes: Volumes, release_broker: ReleaseBroker) -> None:
    # as the image runs it: root dropping to `bridge`, in a directory `bridge` can traverse
    image_users.require("meter-bridge")
    root = volumes.root
    bridge_dir = REPO / "services" / "meter-bridge"
    # in the image /data is the bridge-data volume; here what the bridge keeps goes into the test's own
    config = release_bridge_config_text(root / "data")
    # the EMU-2 is looked for by its USB ids and is not plugged in; stale after 1 s
    config = config.replace("sources: []", "sources:\n  - {type: emu2, id: grid, stale_after_s: 1}")
    health_port = free_port()
    env = {
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "BRIDGE_CONFIG_FILE": str(root / "data" / "config.yaml"),
        "BRIDGE_DEFAULT_CONFIG": str(bridge_dir / "default-config.yaml"),
        "BRIDGE_CONFIG": config,
        "BRIDGE_HEALTH_PORT": str(health_port),
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(release_broker.port),
        "MQTT_PASSWORD_FILE": str(release_broker.share / "bridge" / "password"),
        "SYSFS_TTY_DIR": str(root / "sys"),
        "DEV_DIR": str(root / "dev"),
    }
    log = (root / "bridge.log").open("wb")
    process = subprocess.Popen(["sh", str(bridge_dir / "entrypoint.sh"), "run"], env=env, stdout=log, stderr=log)
    try:
        wait_for_port(health_port, timeout=30)
        deadline = time.monotonic() + 30
        report: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=5)
            except urllib.error.HTTPError as err:  # 503: a source is stale
                report = json.load(err)
                break
            time.sleep(0.5)
        assert report.get("sources", {}).get("grid", {}).get("healthy") is False, report
        check = run_check(healthcheck("meter-bridge"), env)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "stale: grid" in check.stdout
        status = run_check(["CMD", "meter-bridge", "status"], env)
        assert status.returncode == 1, "the report still says so"
        assert "STALE" in status.stdout
    finally:
        stop_process(process)
        log.close()


def test_mqtt(release_broker: ReleaseBroker) -> None:
    command = from_repository(healthcheck("mqtt"), REPO / "services" / "mosquitto")
    check = run_check(command, release_broker.environment())
    assert check.returncode == 0, check.stdout + check.stderr


def test_zigbee2mqtt_without_a_coordinator(tmp_path: Path) -> None:
    marker = tmp_path / "idle"
    env = {
        "ZIGBEE2MQTT_DATA": str(tmp_path / "data"),
        "SYSFS_TTY_DIR": str(tmp_path / "sys"),
        "DEV_DIR": str(tmp_path / "dev"),
        "Z2M_IDLE_MARKER": str(marker),
        "ZIGBEE_RECHECK_S": "0.2",
        "MQTT_ZIGBEE2MQTT_PASSWORD": "pw",
        "PATH": os.environ["PATH"],
        "Z2M_RUN_USER": image_users.image_users()["zigbee2mqtt"].test_name,
    }
    script = REPO / "services" / "zigbee2mqtt" / "hems-entrypoint.sh"
    process = subprocess.Popen(["sh", str(script), "true"], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60  # a hang bound only
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        kind, command = healthcheck("zigbee2mqtt")
        # the image's marker path is fixed; here it is the test's own
        check = run_check([kind, command.replace("/tmp/hems-zigbee2mqtt-idle", str(marker))], env)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        stop_process(process)


def test_wifi_repeater_without_its_adapter(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # NetworkManager answers, the access point is not active (its USB WiFi adapter is missing)
    (bindir / "nmcli").write_text("#!/bin/sh\nexit 0\n")
    (bindir / "nmcli").chmod(0o755)
    env = {
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "WIFI_REPEATER_ENABLED": "true",
        "AP_SSID": "Home extra",
        "AP_PASSWORD": "long-enough-pw",
    }
    command = from_repository(healthcheck("wifi-repeater"), REPO / "services" / "wifi-repeater")
    check = run_check(command, env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "not active" in check.stdout


def test_nginx(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx not installed (make setup installs it)")
    from release.test_release_nginx import proxy_in_front_of

    with proxy_in_front_of(tmp_path, free_port()) as (_, https_port):
        command = from_repository(healthcheck("nginx"), REPO / "nginx")
        check = run_check(command, {"NGINX_HTTPS_PORT": str(https_port)})
        assert check.returncode == 0, check.stdout + check.stderr


def test_influx_provision(tmp_path: Path) -> None:
    # liveness of the provisioner: the token it wrote; meters play no part
    command = healthcheck("influx-provision")
    assert command == ["CMD", "test", "-s", "/run/hems/influx-tokens/bridge/bridge.token"]
    (tmp_path / "bridge.token").write_text("token")
    assert run_check([*command[:3], str(tmp_path / "bridge.token")], {}).returncode == 0


@pytest.mark.parametrize(
    ("service", "expected", "why"),
    [
        ("influxdb", ["CMD", "influx", "ping", "--host", "http://127.0.0.1:8086"], "no InfluxDB 2 here"),
        (
            "homeassistant",
            ["CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8123/manifest.json"],
            "Home Assistant's own HTTP server only",
        ),
        (
            "hass-configurator",
            [
                "CMD",
                "python3",
                "-c",
                "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3218/', timeout=5)",
            ],
            "the configurator's own HTTP server only",
        ),
    ],
)
def test_the_others_ask_only_whether_the_server_answers(service: str, expected: list[str], why: str) -> None:
    # not run here (fixed ports, or no binary): pinned so that a meter-dependent check shows up
    assert healthcheck(service) == expected, why
