"""`make demo` keeps its promise: simulated readings on screen within 10 s while the whole
stack (supervisord: Mosquitto, bridge, Home Assistant, configurator, nginx) comes up through the
release's own entrypoints, the credentials are generated and never defaults, and everything
stops cleanly."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from helpers.net import free_port

REPO = Path(__file__).resolve().parents[2]


def test_demo_shows_simulated_readings_within_10_s(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    env = {
        **os.environ,
        "DEMO_DIR": str(demo_dir),
        **{f"DEMO_{name}_PORT": str(free_port()) for name in ("MQTT", "HEALTH", "HA", "CONFIGURATOR", "HTTPS", "HTTP")},
        "DEMO_SECONDS": "8",
        "VENV": str(Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv"))),
    }
    result = subprocess.run(
        ["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    screens = result.stdout.split("meter-bridge watch")
    # the first screen with a number in it comes within the first seconds (one a second)
    first_with_power = next(
        i for i, screen in enumerate(screens) if re.search(r"^grid\s+online\s+-?\d+\.\d", screen, re.M)
    )
    assert first_with_power <= 10
    last = screens[-1]
    for meter in ("grid", "solar", "heat_pump", "ev"):
        assert re.search(rf"^{meter}\s+online\s+-?\d+\.\d", last, re.M), last
    # the broker's users, passwords and ACL are the release's (services/mosquitto/entrypoint.sh)
    password_file = demo_dir / "mqtt" / "share" / "bridge" / "password"
    password = password_file.read_text().strip()
    assert len(password) >= 20
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"
    assert password not in result.stdout + (demo_dir / "logs" / "bridge.log").read_text()
    broker_config = (demo_dir / "mqtt" / "config" / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in broker_config
    assert f"acl_file {demo_dir}/mqtt/config/acl" in broker_config
    assert "user bridge\ntopic readwrite hems/#" in (demo_dir / "mqtt" / "config" / "acl").read_text()
    # every native service is started by its release entrypoint, HA after the release's seeding
    programs = (demo_dir / "supervisord.conf").read_text()
    entrypoints = ("services/mosquitto/entrypoint.sh", "services/meter-bridge/entrypoint.sh", "nginx/entrypoint.sh")
    for entrypoint in entrypoints:
        assert f"{REPO}/{entrypoint}" in programs, entrypoint
    assert f"{REPO}/services/homeassistant/hems_seed.py" in programs
    assert "http:" not in (demo_dir / "ha" / "configuration.yaml").read_text()  # seeded into .storage/http
    # the Home Assistant owner's password is generated and printed once, on the first run
    ha_password = (demo_dir / "ha_password").read_text().strip()
    assert len(ha_password) >= 20
    assert ha_password in result.stdout
    assert "https://127.0.0.1:" in result.stdout
    assert "demo stopped" in result.stdout
    # supervisord and every program it ran are gone
    assert not (demo_dir / "supervisord.pid").exists()
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert f"mosquitto -c {demo_dir}" not in processes
    assert f"hass --config {demo_dir}" not in processes
