"""`make demo` keeps its promise: simulated readings on screen within 10 s while the whole
stack (supervisord: Mosquitto, bridge, Home Assistant, configurator, nginx) comes up through the
release's own entrypoints, the credentials are generated and never defaults, and everything
stops cleanly. It refuses to start when a port it needs is taken, naming the holder, and its
live view says when the broker or Home Assistant is down (issue 24)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.net import free_port
from helpers.screen import Screen

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv"))
CLOCK = r"\d\d:\d\d:\d\d"  # HH:MM:SS


@pytest.fixture
def demo_dir() -> Iterator[Path]:
    """Where a demo keeps its state: run as root, the demo's services drop to their images' users,
    which must reach their own directories in it, so not under pytest's 0700 tmp_path."""
    parent = Path(tempfile.mkdtemp(prefix="hems-demo-"))
    parent.chmod(0o755)
    yield parent / "demo"
    shutil.rmtree(parent, ignore_errors=True)


def demo_env(demo_dir: Path, **extra: str) -> dict[str, str]:
    """The demo's environment with every port free a moment ago and its state in `demo_dir`."""
    return {
        **os.environ,
        "DEMO_DIR": str(demo_dir),
        **{f"DEMO_{name}_PORT": str(free_port()) for name in ("MQTT", "HEALTH", "HA", "CONFIGURATOR", "HTTPS", "HTTP")},
        "VENV": str(VENV),
        **extra,
    }


def demo_processes(demo_dir: Path) -> list[str]:
    """The running processes whose command line names `demo_dir` (supervisord and its programs)."""
    processes = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in processes.splitlines() if str(demo_dir) in line]


def test_demo_shows_simulated_readings_within_10_s(demo_dir: Path) -> None:
    env = demo_env(demo_dir, DEMO_SECONDS="8")
    result = subprocess.run(
        ["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if os.geteuid() == 0:
        # as on a device, each service ran as its image's user, not as root after all
        assert "the services run as root this time" not in result.stderr, result.stderr
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


def test_demo_refuses_a_taken_port_and_names_its_holder(demo_dir: Path) -> None:
    env = demo_env(demo_dir, DEMO_SECONDS="5")  # were the check missing, the demo would end by itself
    port = int(env["DEMO_MQTT_PORT"])
    # another program listening on the broker's port (the issue: Mosquitto crash-looped on it)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import socket, sys, time\n"
         "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('ready', flush=True)\n"
         "time.sleep(120)", str(port)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "ready\n"
        holder_name = Path(f"/proc/{holder.pid}/comm").read_text().strip()
        result = subprocess.run(
            ["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"demo: port {port} on 127.0.0.1 (the MQTT broker, DEMO_MQTT_PORT) is taken: "
        f"held by {holder_name} (PID {holder.pid}); free instead: DEMO_MQTT_PORT="
    ) in result.stderr
    assert "nothing was started" in result.stderr
    # nothing was started, nothing written
    assert not demo_dir.exists()
    assert demo_processes(demo_dir) == []
    assert "HEMS demo" not in result.stdout


def _ctrl_c_acted_on() -> None:
    """In the demo's process, before exec: SIGINT's default action, whatever this run inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.homeassistant
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_live_view_says_when_the_broker_and_home_assistant_are_down_and_back(demo_dir: Path) -> None:
    env = demo_env(demo_dir)
    broker = re.escape(f"broker 127.0.0.1:{env['DEMO_MQTT_PORT']}")
    home_assistant = re.escape(f"Home Assistant http://127.0.0.1:{env['DEMO_HA_PORT']}")
    supervisorctl = [str(VENV / "bin" / "supervisorctl"), "-c", str(demo_dir / "supervisord.conf")]
    # as a person runs it: in the foreground until Ctrl-C (SIGINT to its process group), with Ctrl-C
    # acted on as in a terminal: a test run started in the background (`cmd &` in a script) inherits
    # SIGINT ignored, and bash can neither trap nor reset a signal ignored on entry, nor would the
    # live view (Python leaves it ignored): the demo then never stops (seen in CI runs started so)
    demo = subprocess.Popen(
        ["bash", "scripts/demo.sh"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, preexec_fn=_ctrl_c_acted_on,
    )  # fmt: skip
    screen = Screen(demo)
    try:
        ha_up = screen.wait_for(rf"^{home_assistant} up since {CLOCK}$", timeout=420)
        screen.wait_for(rf"^{broker} up since {CLOCK}$", after=ha_up)
        subprocess.run([*supervisorctl, "stop", "mosquitto"], check=True, capture_output=True, timeout=60)
        down = screen.wait_for(rf"^{broker} down since {CLOCK} \(connection refused\)$", after=ha_up)
        subprocess.run([*supervisorctl, "start", "mosquitto"], check=True, capture_output=True, timeout=60)
        back = screen.wait_for(rf"^{broker} up, back since {CLOCK} \(was down from {CLOCK}, \d+ s\)$", after=down)
        # the bridge reconnected and publishes again: a reading newer than the retained one
        first = screen.wait_for(rf"^grid\s+online\s+-?\d+\.\d.*  {CLOCK}$", after=back)
        retained_ts = screen.lines[first].split()[-1]
        screen.wait_for(rf"^grid\s+online\s+-?\d+\.\d.*  (?!{retained_ts}){CLOCK}$", after=first, timeout=60)
        subprocess.run([*supervisorctl, "stop", "homeassistant"], check=True, capture_output=True, timeout=90)
        ha_down = screen.wait_for(rf"^{home_assistant} down since {CLOCK} \(connection refused\)$", after=back)
        subprocess.run([*supervisorctl, "start", "homeassistant"], check=True, capture_output=True, timeout=90)
        screen.wait_for(
            rf"^{home_assistant} up, back since {CLOCK} \(was down from {CLOCK}, \d+ s\)$", after=ha_down, timeout=420
        )
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            # a hang bound: supervisord stops Home Assistant (up to its stopwaitsecs), then the rest
            demo.wait(300)
        except subprocess.TimeoutExpired:
            listing = subprocess.run(["ps", "-e", "-o", "pid,ppid,pgid,stat,etime,args"],
                                     capture_output=True, text=True, check=False).stdout  # fmt: skip
            tree = "\n".join(line for line in listing.splitlines() if line.split()[2:3] == [str(demo.pid)])
            os.killpg(demo.pid, signal.SIGKILL)
            subprocess.run(["bash", "scripts/demo.sh", "stop"], cwd=REPO, env=env, capture_output=True, timeout=120)
            raise AssertionError(
                "the demo did not stop within 300 s of Ctrl-C; its processes:\n"
                + tree
                + "\nlast lines:\n"
                + "\n".join(screen.lines[-15:])
            ) from None
    assert "demo stopped" in screen.lines
    assert demo_processes(demo_dir) == []
