"""The release's Home Assistant configuration, run in the pinned Home Assistant.

A fresh /config is seeded the way the homeassistant image does it (hems_seed.py as a subprocess:
ha-config/, HA's stored HTTP settings, the MQTT and InfluxDB config entries) and the bridge
announces the documented household (grid, solar, heat pump, EV with their roles by the operator's
role rules, and flex for the heat pump and EV); the release's hems integration wires the Energy
preferences and writes the HEMS dashboard from the roles. Then everything that names an entity is
checked against what HA really created: the Energy preferences, the HEMS dashboard (as HA serves
it), the recorder's exclusions and the InfluxDB filters. HA's repairs list holds nothing caused by
our configuration, no HTTP setting is left pending (nothing for HA to revert five minutes later)
and HA listens on loopback only.

configuration.yaml is the test helper's (the shipped one loads `default_config`, whose discovery
and cloud integrations reach the network); the packages, the dashboard and the stores are the
release's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.homeassistant import REPO, HomeAssistant
from helpers.mosquitto import Mosquitto
from helpers.net import free_port
from helpers.victoria import Victoria
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig
from meterbridge.ha_topics import Topics
from meterbridge.model import MeterDescription, Quantity
from meterbridge.sinks.homeassistant.discovery import discovery_message

pytestmark = pytest.mark.homeassistant

SEED = REPO / "services" / "homeassistant" / "hems_seed.py"
HOUSEHOLD = [
    {"type": "simulated", "id": "grid", "name": "Grid", "profile": "grid", "pv_peak_w": 3000},
    {"type": "simulated", "id": "solar", "name": "Solar", "profile": "solar"},
    {"type": "simulated", "id": "heat_pump", "name": "Heat pump", "profile": "heat_pump"},
    {"type": "simulated", "id": "ev", "name": "EV charger", "profile": "ev"},
]
#: The household's roles, as an operator's role rules give them (scripts/demo.sh has the same).
ROLES = {"grid": "grid", "solar": "solar", "heat_pump": "heat_pump", "ev": "ev_charger"}
EXTRA_YAML = """\
frontend:
energy:
history:
logbook:
input_number:
  room_temperature:
    name: Room temperature
    min: 0
    max: 40
    unit_of_measurement: "°C"
logger:
  default: warning
  logs:
    homeassistant.components.http: info
    homeassistant.components.influxdb: debug
"""


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker with the release's user names for Home Assistant and the bridge."""
    broker = Mosquitto(tmp_path / "mosquitto", users={"bridge": "bridge-pass-0123", "homeassistant": "ha-pass-0123456"})
    broker.start()
    yield broker
    broker.stop()


def seed_release(config: Path, ha_port: int, broker: Mosquitto, influx_url: str) -> None:
    """hems_seed.py as the image runs it: its own interpreter, settings from the environment."""
    token_file = config.parent / "influx-tokens" / "homeassistant.token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("scoped-token-for-homeassistant\n")
    env = {
        "PATH": os.environ["PATH"],
        "HEMS_SEED_SOURCE": str(REPO / "ha-config"),
        "HA_CONFIG_DIR": str(config),
        "HA_MQTT_BROKER": broker.host,
        "HA_MQTT_PORT": str(broker.port),
        "MQTT_HOMEASSISTANT_PASSWORD": broker.password("homeassistant"),
        "HA_HTTP_SERVER_PORT": str(ha_port),
        "INFLUXDB_URL": influx_url,
        "INFLUXDB_TOKEN_FILE": str(token_file),
    }
    result = subprocess.run([sys.executable, str(SEED)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def dashboard_entities(node: Any) -> set[str]:
    """Every entity id a Lovelace YAML dashboard names (`entity:` and `entities:` keys)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "entity" and isinstance(value, str):
                found.add(value)
            elif key == "entities" and isinstance(value, list):
                found |= {item for item in value if isinstance(item, str)}
            found |= dashboard_entities(value)
    elif isinstance(node, list):
        for item in node:
            found |= dashboard_entities(item)
    return found


def energy_entities(prefs: dict[str, Any]) -> set[str]:
    """Every statistic id the Energy preferences name."""
    found: set[str] = set()
    for item in [*prefs["energy_sources"], *prefs["device_consumption"]]:
        found |= {v for k, v in item.items() if k.startswith("stat_") and isinstance(v, str)}
    return found


def hems_globs(filters: dict[str, Any]) -> list[str]:
    """The entity globs of a recorder/InfluxDB include or exclude block that name the bridge's ids."""
    return [glob for glob in filters.get("entity_globs", []) if ".hems_" in glob]


def listeners(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* has them) with a socket listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


async def wait_for(ha: HomeAssistant, entity_ids: set[str], available: set[str], timeout: float = 60) -> dict[str, Any]:
    """States once every entity in `entity_ids` exists and those in `available` have a value."""
    states: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        states = {s["entity_id"]: s for s in await ha.rest("GET", "/api/states")}
        valued = {e for e in available if states.get(e, {}).get("state") not in (None, "unknown", "unavailable")}
        if entity_ids <= set(states) and valued == available:
            return states
        await asyncio.sleep(0.5)
    missing = sorted(entity_ids - set(states)) + sorted(e for e in available if e not in states or e not in valued)
    raise AssertionError(f"missing or without a value in Home Assistant: {missing}")


async def test_release_config_names_only_entities_that_exist(tmp_path: Path, mosquitto: Mosquitto) -> None:
    vm_port = free_port()
    ha = HomeAssistant(tmp_path / "config", packages=True, extra_yaml=EXTRA_YAML)
    seed_release(ha.workdir, ha.port, mosquitto, f"http://127.0.0.1:{vm_port}")
    bridge_config = BridgeConfig.model_validate(
        {
            "site": {"id": "release"},
            "mqtt": mosquitto.bridge_mqtt("hems"),
            "homeassistant": {"min_interval_s": 0.5},
            "health": {"enabled": False},
            "sources": [{**source, "interval_s": 0.5} for source in HOUSEHOLD],
            "discovery": {
                **dict.fromkeys(("emu2", "zigbee2mqtt", "shelly", "tasmota", "glow"), False),
                "roles_path": str(tmp_path / "meters.json"),
                "role_rules": [{"meter": meter, "role": role} for meter, role in ROLES.items()],
            },
            "flex": {
                "enabled": True,
                "site_meter_id": "grid",
                "state_path": str(tmp_path / "flex-state.json"),
                "assets": [
                    {
                        "id": asset,
                        "name": name,
                        "kind": kind,
                        "rated_power_w": watts,
                        "meter_id": asset,
                        "actuator": {"type": "mqtt", "command_topic": f"test/{asset}/set"},
                    }
                    for asset, name, kind, watts in (
                        ("heat_pump", "Heat pump", "heat_pump", 2500),
                        ("ev", "EV charger", "ev_charger", 7400),
                    )
                ],
            },
        }
    )
    victoria = Victoria(tmp_path / "vm", port=vm_port)
    ha.start()
    try:
        async with Bridge(bridge_config):
            # the hems integration wires every meter of the household, and the EV's flex switch
            # into the HEMS dashboard (it waits for HA to have the entity)
            wired: dict[str, Any] = {"energy_sources": [], "device_consumption": []}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while loop.time() < deadline:
                async with ha.websocket() as ws:
                    with contextlib.suppress(AssertionError):  # "No prefs" until the roles come
                        wired = await ws.call("energy/get_prefs")
                    dashboard = await ws.call("lovelace/config", url_path="hems-energy", force=True)
                if len(energy_entities(wired)) == 8 and "switch.hems_flex_ev_allow" in dashboard_entities(dashboard):
                    break
                await asyncio.sleep(0.5)
            assert energy_entities(wired) == {
                f"sensor.hems_{meter}_{quantity}"
                for meter, quantity in (
                    # power: the recorded 1-minute mean (the recorder leaves the live power out)
                    *(("grid", q) for q in ("energy_import", "energy_export", "power_average")),
                    ("solar", "energy_export"),
                    *((m, q) for m in ("heat_pump", "ev") for q in ("energy_import", "power_average")),
                )
            }, wired
            package = yaml.safe_load((ha.workdir / "packages" / "hems.yaml").read_text())
            influx = yaml.safe_load((ha.workdir / "packages" / "influxdb.yaml").read_text())["influxdb"]
            named = energy_entities(wired) | dashboard_entities(dashboard)
            assert "switch.hems_flex_ev_allow" in named, dashboard
            states = await wait_for(ha, named, available=energy_entities(wired))
            ids = set(states)

            # the recorder's and InfluxDB's filters on the bridge's ids each match an entity here,
            # or an id the bridge's discovery gives some meter quantity (power factor: Shelly)
            possible = (
                ids
                | {
                    discovery_message(Topics(), "site", MeterDescription("meter", "Meter", "test"), quantity)[1][
                        "default_entity_id"
                    ]
                    for quantity in Quantity
                }
                | {"switch.hems_meter_relay"}
            )  # a Shelly channel's relay (tests/integration/test_shelly.py)
            globs = [
                *hems_globs(package["recorder"]["exclude"]),
                *hems_globs(influx["include"]),
                *hems_globs(influx["exclude"]),
            ]
            assert globs, "no filter names the bridge's entities"
            for glob in globs:
                assert fnmatch.filter(possible, glob), f"{glob} matches no entity: {sorted(possible)}"

            async with ha.websocket() as ws:
                validation = await ws.call("energy/validate")
                issues = await ws.call("repairs/list_issues")
            problems = [
                p
                for group in [*validation["energy_sources"], *validation["device_consumption"]]
                for p in group
                if p["type"] != "statistics_not_defined"  # HA's first 5-minute statistics run is later
            ]
            assert problems == [], problems
            ours = [i for i in issues["issues"] if i["domain"] in {"http", "influxdb", "mqtt", "lovelace", "recorder"}]
            assert ours == [], ours

            # the release's packages load without a complaint
            config_errors = [line for line in ha.tail_log(2000).splitlines() if "[homeassistant.config]" in line]
            assert config_errors == [], config_errors

            # HTTP: the stored settings are stable (nothing pending to revert after 5 minutes),
            # HA listens on loopback only and trusts the proxy
            assert "Using stable HTTP config" in ha.tail_log(400)
            assert "Using pending HTTP config" not in ha.tail_log(400)
            assert listeners(ha.port) == {"0100007F"}, listeners(ha.port)

        # InfluxDB came up after HA: the entry is retried and writes once it answers. HA
        # sends what only it knows (a room sensor) and leaves the bridge's meters to the bridge.
        # The bridge is stopped first: HA's InfluxDB integration writes a batch only after a 1 s
        # lull in state changes (or 100 included ones), which twenty sensors at 2 Hz never leave.
        async with ha.websocket() as ws:
            entries = await ws.call("config_entries/get", domain="influxdb")
        assert [e["state"] for e in entries] == ["setup_retry"], entries
        victoria.start()
        try:
            state = ""
            for _ in range(300):  # HA's retry backoff grows: 5, 10, 20, 40, 80 s
                async with ha.websocket() as ws:
                    (entry,) = await ws.call("config_entries/get", domain="influxdb")
                state = entry["state"]
                if state == "loaded":
                    break
                await asyncio.sleep(0.5)
            assert state == "loaded", ha.tail_log()
            await ha.rest(
                "POST",
                "/api/services/input_number/set_value",
                {"entity_id": "input_number.room_temperature", "value": 19.5},
            )
            series = await asyncio.to_thread(
                victoria.export, '{entity_id="room_temperature"}', lambda found: bool(found), 60
            )
            everything = await asyncio.to_thread(victoria.export_now, '{__name__=~".+"}')
            assert any(19.5 in s.values for s in series), [x.labels for x in everything]
            meters = await asyncio.to_thread(victoria.export_now, '{entity_id=~"hems_.*"}')
            assert [s.labels for s in meters if "flex" not in s.labels["entity_id"]] == [], (
                "HA stored the bridge's meters a second time"
            )
        finally:
            victoria.stop()
    finally:
        ha.stop()


def test_ha_answers_through_the_proxy_headers(tmp_path: Path) -> None:
    """X-Forwarded-For from the trusted proxy is accepted (HA 2026 answers 400 when it is not)."""
    ha = HomeAssistant(tmp_path / "config")
    ha.start()
    try:
        request = urllib.request.Request(  # noqa: S310 - loopback URL
            f"{ha.url}/manifest.json", headers={"X-Forwarded-For": "192.0.2.7", "X-Forwarded-Proto": "https"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback URL
            assert response.status == 200
    finally:
        ha.stop()
