"""The hems integration is the one owner of the Energy dashboard and the HEMS dashboard (issue 26
follow-up), on the pinned Home Assistant seeded the way the release's image does it.

/config is seeded by hems_seed.py as a subprocess (as services/homeassistant/entrypoint.sh runs it:
the shipped ha-config, HTTP settings, the MQTT entry with the broker's homeassistant password); HA
loads the release's packages (the `hems` integration and the HEMS dashboard). The bridge runs the
release's default config (meters found by default) with only an EMU-2 plugged in (a simulator on a
pseudo-terminal listed in a fake sysfs with Rainforest's USB ids, tests/integration/
test_home_sets_itself_up.py). A fresh home must end with `energy/validate` holding nothing but
`statistics_not_defined`, and every entity the HEMS dashboard names (read back with
`lovelace/config`) must exist. A home upgraded from a release whose seed wrote fixed preferences
(tests/fixtures/homeassistant/previous-release/) converges to its meters' roles and keeps the
householder's own edits.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.emu2_sim import Emu2Simulator
from helpers.homeassistant import REPO, HomeAssistant
from helpers.net import free_port
from helpers.release import ReleaseBroker, release_bridge_config
from integration.test_roles_energy_homeassistant import dashboard_entities
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig

pytestmark = pytest.mark.homeassistant

SEED = REPO / "services" / "homeassistant" / "hems_seed.py"
PREVIOUS = REPO / "tests" / "fixtures" / "homeassistant" / "previous-release"
EMU2_GRID = {
    "type": "grid",
    "stat_energy_from": "sensor.hems_emu2_energy_import",
    "stat_energy_to": "sensor.hems_emu2_energy_export",
    # the recorded 1-minute mean: the recorder leaves the live power out, and energy/validate flags
    # a power it does not record (recorder_untracked)
    "stat_rate": "sensor.hems_emu2_power_average",
}
#: The householder's own: a device added by hand, and a seeded device they renamed.
KETTLE = {"stat_consumption": "sensor.kettle_energy", "name": "Kettle"}
RENAMED = {"stat_consumption": "sensor.hems_heat_pump_energy_import", "stat_rate": "sensor.hems_heat_pump_power"}
RENAMED["name"] = "Heat pump (mine)"
#: ... whose live power (no longer recorded) the integration moves to its recorded average.
RENAMED_RECORDED = {**RENAMED, "stat_rate": "sensor.hems_heat_pump_power_average"}


def seed(config: Path, broker: ReleaseBroker, ha_port: int, source: Path = REPO / "ha-config") -> str:
    """hems_seed.py as the image's entrypoint runs it (its own interpreter, settings from the environment)."""
    env = {
        "PATH": os.environ["PATH"],
        "HEMS_SEED_SOURCE": str(source),
        "HA_CONFIG_DIR": str(config),
        "HA_MQTT_BROKER": "127.0.0.1",
        "HA_MQTT_PORT": str(broker.port),
        "MQTT_HOMEASSISTANT_PASSWORD": broker.password("homeassistant"),
        "HA_HTTP_SERVER_PORT": str(ha_port),
        "INFLUXDB_TOKEN_FILE": str(config.parent / "no-token"),
    }
    result = subprocess.run([sys.executable, str(SEED)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stderr


def bridge_config(broker: ReleaseBroker, tmp_path: Path) -> BridgeConfig:
    """The release's default config, untouched but for the broker, the data volume and no InfluxDB."""
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(broker.port),
        "MQTT_PASSWORD": broker.password("bridge"),
        "BRIDGE_HEALTH_PORT": str(free_port()),
    }
    config = release_bridge_config(env, tmp_path / "data")
    return config.model_copy(update={"influx": None})


async def until(check: Callable[[], Any], what: str, ha: HomeAssistant, timeout: float = 90) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last and last[0]:
            return last[1]
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} not reached in {timeout} s: {last}\n{ha.tail_log()}")


def without_none(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if value is not None}


async def energy_follows_the_emu2(ha: HomeAssistant) -> dict[str, Any]:
    """The Energy preferences once the grid source is the EMU-2's, power included."""

    async def check() -> tuple[bool, Any]:
        async with ha.websocket() as ws:
            try:
                prefs = await ws.call("energy/get_prefs")
            except AssertionError as err:
                if "No prefs" not in str(err):
                    raise
                return False, None  # none yet: a new home's seed writes none
        grids = [s for s in prefs["energy_sources"] if s["type"] == "grid" and "emu2" in str(s.get("stat_rate"))]
        return bool(grids), prefs

    prefs: dict[str, Any] = await until(check, "the Energy dashboard wired to the EMU-2", ha)
    return prefs


async def problems(ha: HomeAssistant, allowed: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """What `energy/validate` still finds once the meters have reported (their first states come within
    seconds), statistics not compiled yet left out (HA compiles every 5 minutes) and any finding
    about an entity in `allowed` too."""

    async def check() -> tuple[bool, Any]:
        async with ha.websocket() as ws:
            validation = await ws.call("energy/validate")
        groups = (*validation["energy_sources"], *validation["device_consumption"])
        found = [p for group in groups for p in group if p["type"] != "statistics_not_defined"]
        found = [p for p in found if not {e for e, _ in p["affected_entities"]} <= allowed]
        return not found, found

    try:
        await until(check, "energy/validate clean", ha, timeout=30)
    except AssertionError as err:
        return [{"error": str(err)[:2000]}]
    return []


async def dashboard_names_what_exists(ha: HomeAssistant, wanted: str) -> set[str]:
    """Every entity the HEMS dashboard names, as HA serves it, once it names `wanted`; each must exist."""

    async def check() -> tuple[bool, Any]:
        async with ha.websocket() as ws:
            board = await ws.call("lovelace/config", url_path="hems-energy", force=True)
        named = set(dashboard_entities(board)) | {
            e for node in _lists(board, "entities") for e in node if isinstance(e, str)
        }
        return wanted in named, named

    named: set[str] = await until(check, f"the HEMS dashboard naming {wanted}", ha)
    states = {s["entity_id"] for s in await ha.rest("GET", "/api/states")}
    assert named <= states, f"cards naming entities HA does not have (Entity not found): {named - states}"
    return named


def _lists(node: Any, key: str) -> list[list[Any]]:
    """Every list under `key` anywhere in a Lovelace config (`entities: [sensor.x]` takes plain ids too)."""
    found: list[list[Any]] = []
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key and isinstance(value, list):
                found.append(value)
            found += _lists(value, key)
    elif isinstance(node, list):
        for item in node:
            found += _lists(item, key)
    return found


async def test_a_new_home_with_an_emu2_has_clean_dashboards(
    tmp_path: Path,
    home_broker: ReleaseBroker,
    emu2: Emu2Simulator,
) -> None:
    ha = HomeAssistant(tmp_path / "config", packages=True, extra_yaml="energy:\n")
    seed(ha.workdir, home_broker, ha.port)
    assert not (ha.workdir / ".storage" / "energy").exists(), "the seed wires no meter a home may lack"
    ha.start()
    try:
        # before any meter: the shipped dashboard names nothing
        async with ha.websocket() as ws:
            board = await ws.call("lovelace/config", url_path="hems-energy", force=True)
        assert set(dashboard_entities(board)) == set()
        async with Bridge(bridge_config(home_broker, tmp_path)):
            prefs = await energy_follows_the_emu2(ha)
            assert [without_none(s) for s in prefs["energy_sources"]] == [{**EMU2_GRID, "cost_adjustment_day": 0.0}]
            assert prefs["device_consumption"] == []
            assert await problems(ha) == []
            # the power graph on the recorded 1-minute means, the live power in Meter health
            named = await dashboard_names_what_exists(ha, "sensor.hems_emu2_power_average")
            assert "sensor.hems_emu2_power" in named, named
            assert not any(e.startswith(("switch.hems_flex", "select.hems_flex")) for e in named), named

            # as a battery (import: charging): HA's battery power is positive discharging, so the
            # meter's power goes in inverted; HA makes that sensor and validates it
            choice = {"entity_id": "select.hems_emu2_role", "option": "Battery"}
            await ha.rest("POST", "/api/services/select/select_option", choice)

            async def battery() -> tuple[bool, Any]:
                async with ha.websocket() as ws:
                    sources = (await ws.call("energy/get_prefs"))["energy_sources"]
                return [s["type"] for s in sources] == ["battery"], sources

            (source,) = await until(battery, "the EMU-2 as a battery", ha)
            assert source["stat_energy_from"] == "sensor.hems_emu2_energy_export"
            assert source["stat_energy_to"] == "sensor.hems_emu2_energy_import"
            assert source["power_config"] == {"stat_rate_inverted": "sensor.hems_emu2_power_average"}
            assert source["stat_rate"] == "sensor.hems_emu2_power_average_inverted"
            assert await problems(ha) == []
            states = {s["entity_id"]: s["state"] for s in await ha.rest("GET", "/api/states")}
            inverted = float(states["sensor.hems_emu2_power_average_inverted"])
            assert inverted == -float(states["sensor.hems_emu2_power_average"])
    finally:
        ha.stop()


async def test_a_home_upgraded_from_seeded_preferences_converges_and_keeps_its_edits(
    tmp_path: Path,
    home_broker: ReleaseBroker,
    emu2: Emu2Simulator,
) -> None:
    ha = HomeAssistant(tmp_path / "config", packages=True, extra_yaml="energy:\n")
    # the previous release: its static dashboard and its seeded Energy preferences ...
    previous = Path(shutil.copytree(REPO / "ha-config", tmp_path / "previous"))
    shutil.rmtree(previous / "custom_components")
    shutil.copy(PREVIOUS / "dashboard-hems.yaml", previous / "dashboards" / "hems.yaml")
    seed(ha.workdir, home_broker, ha.port, previous)
    store = json.loads((PREVIOUS / "storage-energy.json").read_text())
    # ... which the householder edited: a device added by hand, one seeded device renamed
    devices = store["data"]["device_consumption"]
    store["data"]["device_consumption"] = [
        RENAMED if d["stat_consumption"] == RENAMED["stat_consumption"] else d for d in devices
    ]
    store["data"]["device_consumption"].append(KETTLE)
    (ha.workdir / ".storage" / "energy").write_text(json.dumps(store))
    # this release's seeding step at the upgrade's first boot
    assert "dashboards/hems.yaml: updated" in seed(ha.workdir, home_broker, ha.port)
    ha.start()
    try:
        async with Bridge(bridge_config(home_broker, tmp_path)):
            prefs = await energy_follows_the_emu2(ha)
            # the untouched seeded entries (grid, solar, EV) gave way to the EMU-2's grid source
            assert [without_none(s) for s in prefs["energy_sources"]] == [{**EMU2_GRID, "cost_adjustment_day": 0.0}]
            # the householder's edits stay: the renamed seeded device (its power now the recorded one)
            # and the hand-made one
            assert prefs["device_consumption"] == [RENAMED_RECORDED, KETTLE]
            # what validate still finds is about the householder's own entries (no such entities here)
            theirs = frozenset({RENAMED["stat_consumption"], RENAMED_RECORDED["stat_rate"], KETTLE["stat_consumption"]})
            assert await problems(ha, theirs) == []
            # the power graph on the recorded 1-minute means, the live power in Meter health
            named = await dashboard_names_what_exists(ha, "sensor.hems_emu2_power_average")
            assert "sensor.hems_emu2_power" in named, named
            assert not any("heat_pump" in e or "hems_ev" in e for e in named), named
    finally:
        ha.stop()
