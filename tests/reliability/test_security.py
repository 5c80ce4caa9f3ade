"""Attack surface: MQTT ACLs of the release's real Mosquitto entrypoint (asserted on the
subscriber: a denied publish still returns success in MQTT 3.1.1), no default or empty password
in any rendered config, and no secret in any log of a bridge that hits refused logins.

Covered elsewhere and not repeated here (see docs/reliability.md): nginx TLS-only, auth on
/configurator/ and /influxdb/ and security headers (tests/release/test_release_nginx.py::
test_live_proxy), the Kasa emulator refusing python-kasa's turn_off (tests/integration/
test_kasa_python_kasa.py::test_control_commands_are_refused_and_counted), anonymous and wrong
passwords refused (tests/release/test_release_mosquitto.py)."""

from __future__ import annotations

import http.server
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers.bridgeproc import BridgeProcess
from helpers.figures import record as record_figure
from helpers.image_users import image_users
from helpers.release import REPO, ReleaseBroker


def reader_of(topic: str) -> str:
    """A user allowed to read everything under `topic`'s prefix."""
    return "homeassistant" if not topic.startswith(("shelly/", "glow/")) else "bridge"


# Two Shelly devices, each with the identity `meter-bridge shelly provision` gives it.
SHELLY_A = "shellyplus1pm-a8032ab12345"
SHELLY_B = "shellypro3em-0cb815fc11f8"

# (publisher, topic, allowed): beyond the cases tests/release/test_release_mosquitto.py pins
ACL_CASES = [
    (SHELLY_A, f"shelly/{SHELLY_A}/events/rpc", True),
    (SHELLY_A, f"shelly/{SHELLY_B}/events/rpc", False),  # faking another device's readings
    (SHELLY_A, f"shelly/{SHELLY_B}/rpc", False),  # commanding another device's relay
    (SHELLY_A, f"shelly/{SHELLY_B}/replies/meter-bridge-home-shelly-shelly/rpc", False),  # faking its replies
    (SHELLY_A, "shelly/em-1/events/rpc", False),
    (SHELLY_A, "zigbee2mqtt/plug/set", False),
    (SHELLY_A, "hems/bridge/availability", False),
    (SHELLY_A, "homeassistant/status", False),
    (SHELLY_A, "glow/AABBCC/SENSOR/electricitymeter", False),
    ("bridge", "glow/AABBCC/SENSOR/electricitymeter", False),
    ("zigbee2mqtt", f"shelly/{SHELLY_A}/rpc", False),
    ("zigbee2mqtt", "hems/meter/grid", False),
]


async def test_acl_least_privilege(release_broker: ReleaseBroker, request: pytest.FixtureRequest) -> None:
    for device in (SHELLY_A, SHELLY_B):
        release_broker.add_shelly(device)
    wrong = [
        case
        for case in ACL_CASES
        if await release_broker.delivered(reader_of(case[1]), case[0], case[1]) is not case[2]
    ]
    shared_user = release_broker.accepts("shelly", "any-password-at-all")
    record_figure(
        "security_mqtt_acl",
        area="Security",
        check="Release Mosquitto (entrypoint-rendered): each user limited to its own prefixes",
        goal="each Shelly touches only shelly/<its id>/; no shared Shelly user; no user writes another's prefix",
        measured=f"{len(ACL_CASES) - len(wrong)}/{len(ACL_CASES)} cases as expected on the subscriber side"
        + (f"; wrong: {wrong}" if wrong else "")
        + ("; the shared `shelly` user still logs in" if shared_user else ""),
        ok=not wrong and not shared_user,
        test=request.node.nodeid,
    )
    assert not wrong
    assert not shared_user


async def test_bridge_cannot_write_another_services_discovery(
    release_broker: ReleaseBroker, request: pytest.FixtureRequest
) -> None:
    topic = "homeassistant/sensor/0x00124b0012345678/power/config"  # zigbee2mqtt's discovery shape
    got = await release_broker.delivered(reader_of(topic), "bridge", topic)
    record_figure(
        "security_mqtt_discovery",
        area="Security",
        check="Bridge user publishing to zigbee2mqtt's HA discovery topics",
        goal="refused",
        measured="delivered" if got else "refused (the bridge's ACL is homeassistant/+/hems/#)",
        ok=not got,
        test=request.node.nodeid,
    )
    assert not got


_WEAK = re.compile(r"(?i)(password|passwd|secret|token)\s*[:=]\s*(\"\"|''|changeme|admin|password|hems)?\s*$")


def test_no_default_or_empty_password_in_rendered_configs(
    tmp_path: Path, release_broker: ReleaseBroker, request: pytest.FixtureRequest
) -> None:
    """Every entrypoint rendered with an empty environment: generated secrets, none empty or default."""
    nginx_root = tmp_path / "nginx"
    env = {
        "PATH": "/usr/sbin:/usr/bin:/bin",
        "NGINX_TEMPLATE": str(REPO / "nginx" / "nginx.conf.template"),
        "NGINX_CONF_FILE": str(nginx_root / "nginx.conf"),
        "NGINX_DATA_DIR": str(nginx_root / "data"),
        "NGINX_RUN_DIR": str(nginx_root / "run"),
        # the image's `nginx` as test machines name it (scripts/image-users.tsv)
        "NGINX_RUN_USER": image_users()["nginx"].test_name,
        "NGINX_MIME_TYPES": "/etc/nginx/mime.types",
    }
    result = subprocess.run(
        ["sh", str(REPO / "nginx" / "entrypoint.sh"), "--render-only"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    rendered = [p for p in [*nginx_root.rglob("*"), *release_broker.config.rglob("*")] if p.is_file()]
    problems = []
    for path in rendered:
        text = path.read_text(errors="replace")
        problems += [f"{path.name}: {line}" for line in text.splitlines() if _WEAK.search(line)]
        if path.name in ("passwd", "htpasswd"):
            for line in text.splitlines():
                user, _, digest = line.partition(":")
                if not digest or digest == user:
                    problems.append(f"{path.name}: {user} has an empty password")
    secrets_dir = release_broker.data / "secrets"
    generated = {p.name: p.read_text() for p in secrets_dir.iterdir() if p.is_file()}
    problems += [f"mqtt secret {name} is {len(v)} characters" for name, v in generated.items() if len(v) < 24]
    record_figure(
        "security_rendered_configs",
        area="Security",
        check="nginx and Mosquitto entrypoints rendered with an empty environment",
        goal="no default or empty password in any rendered config",
        measured=f"{len(rendered)} files, {len(generated)} generated MQTT passwords, {len(problems)} problems",
        ok=not problems,
        test=request.node.nodeid,
    )
    assert rendered
    assert not problems


class _Refusing(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"code":"unauthorized","message":"unauthorized access"}')

    def log_message(self, *_args: object) -> None:
        pass


def test_secrets_never_logged(tmp_path: Path, release_broker: ReleaseBroker, request: pytest.FixtureRequest) -> None:
    """A bridge with known secrets whose MQTT login and InfluxDB writes are refused, at DEBUG."""
    mqtt_secret = "Kn0wn-mqtt-secret-7d2f"
    influx_secret = "Kn0wn-influx-token-91ab"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = (
        "site: {id: home}\n"
        f"mqtt: {{host: 127.0.0.1, port: {release_broker.port}, username: bridge, password: '${{MQTT_PASSWORD}}'}}\n"
        "logging: {level: DEBUG}\n"
        "health: {port: {health_port}}\n"
        f"influx: {{url: 'http://127.0.0.1:{server.server_address[1]}', token: '${{INFLUX_TOKEN}}', "
        "replication_poll_s: 0, flush_interval_s: 0.1}\n"
        f"spool: {{path: '{tmp_path / 'spool.sqlite'}'}}\n"
        "sources:\n  - {type: simulated, id: house, interval_s: 0.2}\n"
    )
    bridge = BridgeProcess(
        tmp_path / "bridge", config, env={"MQTT_PASSWORD": mqtt_secret, "INFLUX_TOKEN": influx_secret}
    )
    try:
        bridge.start()
        deadline = time.monotonic() + 60  # a hang bound only
        while time.monotonic() < deadline:
            health = bridge.health() or {}
            influx = health.get("sinks", {}).get("influx", {})
            if influx.get("errors", {}).get("blocked", 0) >= 1:
                break
            time.sleep(0.3)
        time.sleep(2)
    finally:
        bridge.stop()
        server.shutdown()
    logs = [bridge.log_file, release_broker.root / "entrypoint.log"]
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    refused_mqtt = "not authori" in text.lower() or "refused" in text.lower()
    refused_influx = "401" in text
    leaks = [s for s in (mqtt_secret, influx_secret) if s in text]
    record_figure(
        "security_secrets_in_logs",
        area="Security",
        check="Bridge at DEBUG with known secrets; MQTT login refused, InfluxDB answers 401",
        goal="no secret in any log",
        measured=f"{len(text.splitlines())} log lines grepped, {len(leaks)} secrets found",
        ok=not leaks and refused_mqtt and refused_influx,
        test=request.node.nodeid,
    )
    assert refused_mqtt, "the refused MQTT login was exercised"
    assert refused_influx, "the refused InfluxDB write was exercised"
    assert not leaks
