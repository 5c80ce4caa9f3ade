"""The whole appliance on one machine (`make demo`'s stack under supervisord, every service
through the release's own entrypoint), end to end: the bridge's sensors in Home Assistant, the
Energy dashboard wired from the meters' roles, with a week of history from the first minute, nginx in front,
supervisord restarting a killed bridge while HA sees it go and come back, and, past HA's
5-minute HTTP trial window, the backfilled history joined by what the recorder compiles and HA
still served through nginx only."""

from __future__ import annotations

import asyncio
import base64
import math
import os
import signal
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers.image_users import image_users
from integration.test_ha_release_config import dashboard_entities
from meterbridge.config import load_config
from meterbridge.sources.simulated import HouseholdModel
from meterbridge.sources.simulated_config import SimulatedSourceConfig

from .conftest import Stack

pytestmark = [pytest.mark.slow, pytest.mark.homeassistant]

METERS = ("grid", "solar", "heat_pump", "ev")
#: (quantity, device_class, state_class, unit) of what the Energy dashboard needs
EXPECTED = {
    "power": ("power", "measurement", "W"),
    "energy_import": ("energy", "total_increasing", "kWh"),
}
EXPECTED_EXPORT = ("energy", "total_increasing", "kWh")


async def states(stack: Stack) -> dict[str, dict[str, Any]]:
    """Every state in HA, by entity id."""
    return {state["entity_id"]: state for state in await stack.ha.rest("GET", "/api/states")}


async def wait_for_state(stack: Stack, entity_id: str, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
    """Poll the REST API until `predicate(state)` holds; the state."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        last = (await states(stack)).get(entity_id)
        if last is not None and predicate(last):
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"{entity_id} never matched; last state {last}")


def numeric(state: dict[str, Any]) -> bool:
    """True when the state is a number (not unknown/unavailable)."""
    try:
        float(state["state"])
    except ValueError:
        return False
    return True


async def test_sensors_exist_with_energy_metadata_and_keep_updating(stack: Stack) -> None:
    await wait_for_state(stack, "sensor.hems_ev_energy_import", numeric)
    current = await states(stack)
    wanted = {f"sensor.hems_{meter}_{quantity}": spec for meter in METERS for quantity, spec in EXPECTED.items()}
    wanted |= {"sensor.hems_grid_energy_export": EXPECTED_EXPORT, "sensor.hems_solar_energy_export": EXPECTED_EXPORT}
    for entity_id, (device_class, state_class, unit) in wanted.items():
        state = current[entity_id]
        attributes = state["attributes"]
        assert numeric(state), state
        assert attributes["device_class"] == device_class, entity_id
        assert attributes["state_class"] == state_class, entity_id
        assert attributes["unit_of_measurement"] == unit, entity_id
    # the websocket API streams fresh readings (the simulated meters report every 2 s)
    async with stack.ha.websocket() as ws:
        await ws.call("subscribe_events", event_type="state_changed")
        # (HA fires state_changed only when a value changes: the heat pump or solar can hold
        # still for minutes, the grid meter's noise never does)
        changes = 0
        async with asyncio.timeout(120):  # a hang bound only
            while changes < 2:
                event = await ws.next_event()
                new_state = event["data"]["new_state"]
                if event["data"]["entity_id"] == "sensor.hems_grid_power" and new_state and numeric(new_state):
                    changes += 1


def energy_pref_statistics(prefs: dict[str, Any]) -> set[str]:
    """Every energy statistic the Energy preferences chart (grid import/export, solar, devices)."""
    ids: set[str] = set()
    for source in prefs["energy_sources"]:
        for key in ("stat_energy_from", "stat_energy_to"):
            if source.get(key):
                ids.add(source[key])
        for flow in (*source.get("flow_from", []), *source.get("flow_to", [])):  # the pre-2025 layout
            ids.update(flow[key] for key in ("stat_energy_from", "stat_energy_to") if flow.get(key))
    ids.update(device["stat_consumption"] for device in prefs["device_consumption"])
    return ids


async def test_energy_dashboard_has_a_week_of_charts_when_the_demo_is_up(stack: Stack) -> None:
    """Issue 17: `make demo`'s Energy dashboard has charts as soon as the demo is up, not "no data
    for up to 2 hours": when demo.sh returns (it waits for the backfill), every statistic the
    Energy preferences name holds a week of hourly rows before the hour of its first state. How
    long that took is printed, never asserted (a test never gates on time; demo.sh's own 240 s
    bound is the hang bound)."""
    print(f"demo.sh had HA up with its history after {stack.startup_s:.0f} s")
    async with stack.ha.websocket() as ws:
        statistic_ids = energy_pref_statistics(await ws.call("energy/get_prefs"))
        assert {"sensor.hems_grid_energy_import", "sensor.hems_solar_energy_export"} <= statistic_ids
        week_ago = datetime.fromtimestamp(time.time() - 8 * 86_400, UTC).isoformat()
        rows = await ws.call(
            "recorder/statistics_during_period",
            start_time=week_ago,
            statistic_ids=sorted(statistic_ids),
            period="hour",
            types=["change"],
        )
        history = await ws.call(
            "history/history_during_period",
            start_time=week_ago,
            entity_ids=sorted(statistic_ids),
            include_start_time_state=False,
            significant_changes_only=False,
            minimal_response=True,
            no_attributes=True,
        )
    for statistic_id in statistic_ids:
        # the backfill writes the week before the hour of the entity's first state (what it read
        # too); the rows from that hour on are the recorder's own, and the first of them, compiled
        # at the next hh:00, falls until the background join lifts it up to 10 s later (a stack
        # up in the last minutes of an hour can be queried then): the last test checks the join
        first_ts = next(float(state["lu"]) for state in history[statistic_id] if numeric({"state": state["s"]}))
        live_hour = math.floor(first_ts / 3600) * 3600
        hours = [hour for hour in rows.get(statistic_id, []) if hour["start"] / 1000 < live_hour]
        assert len(hours) == 7 * 24, (statistic_id, len(hours))
        assert hours[-1]["end"] / 1000 == live_hour, statistic_id
        assert all(hour["change"] >= 0 for hour in hours), statistic_id
        # a week of a household moves: as much as the demo's meter says for those hours (a fixed
        # floor would depend on the season: a December week's grid export can be under 1 kWh)
        meter, quantity = demo_statistic(statistic_id)
        imported, exported = demo_meter(stack, meter).energy_kwh(hours[0]["start"] / 1000, live_hour, 10.0)
        expected = imported if quantity == "energy_import" else exported
        assert expected > 0, statistic_id
        assert sum(hour["change"] for hour in hours) == pytest.approx(expected, rel=1e-6), statistic_id


def demo_statistic(statistic_id: str) -> tuple[str, str]:
    """(meter, quantity) of one of the demo's energy statistics, `sensor.hems_<meter>_<quantity>`."""
    name = statistic_id.removeprefix("sensor.hems_")
    meter = next(m for m in METERS if name.startswith(f"{m}_"))
    return meter, name.removeprefix(f"{meter}_")


async def test_energy_dashboard_is_wired_and_valid(stack: Stack) -> None:
    await wait_for_state(stack, "sensor.hems_solar_energy_export", numeric)
    async with stack.ha.websocket() as ws:
        prefs = await ws.call("energy/get_prefs")
        backfilled = energy_pref_statistics(prefs)
        assert backfilled == {
            "sensor.hems_grid_energy_import",
            "sensor.hems_grid_energy_export",
            "sensor.hems_solar_energy_export",
            "sensor.hems_heat_pump_energy_import",
            "sensor.hems_ev_energy_import",
        }
        validation = await ws.call("energy/validate")
    issues = [issue for group in (*validation["energy_sources"], *validation["device_consumption"]) for issue in group]
    # HA compiles long-term statistics only every 5 minutes (at :00, :05...), so a power sensor
    # of a stack younger than that has none yet: that finding is expected. The energy sensors
    # have the backfilled week. Anything else (wrong unit, device class, state class, untracked
    # by the recorder, missing entity) is a defect of the bridge or of ha-config.
    unexpected = [
        issue
        for issue in issues
        if issue["type"] != "statistics_not_defined"
        or any(entity in backfilled for entity, _ in issue["affected_entities"])
    ]
    assert unexpected == [], unexpected
    assert validation["energy_sources"], "the grid and solar sources were validated"


async def test_hems_dashboard_names_what_the_demo_has_and_nothing_else(stack: Stack) -> None:
    """Issue 26: the HEMS dashboard is written by the hems integration from the meters' roles: it names
    the household's meters and the flex entities the bridge announces (the heat pump's; the demo has
    no EV asset, so no EV switch), each one HA has (no "Entity not found")."""
    wanted = {"sensor.hems_grid_power", "sensor.hems_ev_energy_import", "switch.hems_flex_heat_pump_allow"}
    named: set[str] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not wanted <= named:
        async with stack.ha.websocket() as ws:
            board = await ws.call("lovelace/config", url_path="hems-energy", force=True)
        named = dashboard_entities(board)
        await asyncio.sleep(0.5)
    assert wanted <= named, named
    assert "switch.hems_flex_ev_allow" not in named
    assert named <= set(await states(stack)), named - set(await states(stack))


async def test_nginx_serves_home_assistant_its_websocket_and_guards_the_configurator(stack: Stack) -> None:
    base = stack.https_url
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        async with session.get(f"{base}/") as response:
            assert response.status == 200
            assert "<title>Home Assistant</title>" in await response.text()
        # HA rejects forwarded requests from untrusted proxies (400): this one is trusted
        async with session.get(f"{base}/api/", headers={"Authorization": f"Bearer {stack.ha.token}"}) as response:
            assert response.status == 200, await response.text()
        async with session.ws_connect(f"wss://127.0.0.1:{stack.ports['https']}/api/websocket") as ws:
            assert (await ws.receive_json())["type"] == "auth_required"
            await ws.send_json({"type": "auth", "access_token": stack.ha.token})
            assert (await ws.receive_json())["type"] == "auth_ok"
        async with session.get(f"{base}/configurator/") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Basic")
        wrong = base64.b64encode(b"admin:not-the-password").decode()
        async with session.get(f"{base}/configurator/", headers={"Authorization": f"Basic {wrong}"}) as response:
            assert response.status == 401
        right = base64.b64encode(f"admin:{stack.secret('proxy_password')}".encode()).decode()
        async with session.get(f"{base}/configurator/", headers={"Authorization": f"Basic {right}"}) as response:
            assert response.status == 200


async def test_public_device_url_reaches_home_assistant_on_port_80(stack: Stack) -> None:
    """balenaCloud's Public Device URL arrives TLS-terminated on port 80 with Host
    <uuid>.balena-devices.com: the real HA answers (trusting nginx's forwarded headers); any other
    host on port 80 is redirected to https."""
    plain = f"http://127.0.0.1:{stack.ports['http']}"
    public = {"Host": "4f9c1e2a7b3d4c5e8f9a0b1c2d3e4f5a.balena-devices.com"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{plain}/", headers=public, allow_redirects=False) as response:
            assert response.status == 200
            assert "<title>Home Assistant</title>" in await response.text()
        headers = {**public, "Authorization": f"Bearer {stack.ha.token}"}
        async with session.get(f"{plain}/api/", headers=headers, allow_redirects=False) as response:
            assert response.status == 200, await response.text()
        async with session.get(f"{plain}/", allow_redirects=False) as response:
            assert response.status == 301
            assert response.headers["Location"].startswith("https://")


async def test_killed_bridge_is_restarted_and_home_assistant_follows(stack: Stack) -> None:
    await wait_for_state(stack, "sensor.hems_grid_power", numeric)
    before = stack.supervisorctl("pid", "bridge").stdout.strip()
    # supervisord restarts the bridge within about a second, so polling could miss the gap:
    # follow the state changes on the websocket instead
    async with stack.ha.websocket() as ws:
        await ws.call("subscribe_events", event_type="state_changed")
        os.kill(int(before), signal.SIGKILL)
        # the broker publishes the bridge's last will (`offline`): the entities go unavailable
        states_seen: list[str] = []
        async with asyncio.timeout(60):
            while not (states_seen and "unavailable" in states_seen and numeric({"state": states_seen[-1]})):
                event = await ws.next_event()
                if event["data"]["entity_id"] == "sensor.hems_grid_power" and event["data"]["new_state"]:
                    states_seen.append(event["data"]["new_state"]["state"])
    after = stack.supervisorctl("pid", "bridge").stdout.strip()
    assert after.isdigit()
    assert after != before
    # supervisord calls the new bridge RUNNING only after its startsecs (2 s), which a fast restart
    # may not have reached yet: waited for (60 s, a hang bound)
    deadline = time.monotonic() + 60
    while (status := stack.supervisorctl("status")).returncode != 0:  # 3 when any program is not RUNNING
        assert time.monotonic() < deadline, status.stdout
        await asyncio.sleep(0.5)


async def test_flex_entities_exist_and_a_switch_command_reaches_the_bridge(stack: Stack) -> None:
    flex_entities = (
        "switch.hems_flex_participation",
        "select.hems_flex_mode",
        "number.hems_flex_import_limit",
        "button.hems_flex_opt_out",
        "binary_sensor.hems_flex_event_active",
        "switch.hems_flex_heat_pump_allow",
    )
    for entity_id in flex_entities:
        await wait_for_state(stack, entity_id, lambda state: state["state"] not in ("unavailable",), timeout=60)
    participation = await wait_for_state(stack, "switch.hems_flex_participation", lambda s: s["state"] == "on")
    assert participation["attributes"]["friendly_name"].startswith("HEMS Flex")
    # A command from HA goes to the bridge, and only the bridge's own state message turns
    # the switch off in HA (the entity is not optimistic): the round trip is the proof.
    # (The issue asks for effect within a second: the bridge applies a command as it arrives and
    # wakes its tick at once, tests/integration/test_flex_mqtt.py; a clock here would only measure
    # the load of the machine. The bounds only stop a hang.)
    await stack.ha.rest("POST", "/api/services/switch/turn_off", {"entity_id": "switch.hems_flex_participation"})
    await wait_for_state(stack, "switch.hems_flex_participation", lambda s: s["state"] == "off", timeout=60)
    log = (stack.demo_dir / "bridge" / "logs" / "flex-events.jsonl").read_text()
    assert "participation" in log
    await stack.ha.rest("POST", "/api/services/switch/turn_on", {"entity_id": "switch.hems_flex_participation"})
    await wait_for_state(stack, "switch.hems_flex_participation", lambda s: s["state"] == "on", timeout=60)


def process_ids(pid: int) -> tuple[int, int]:
    """The real uid and gid of process `pid`."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


def test_services_run_as_their_images_users(stack: Stack) -> None:
    """Started as root (as every container is), each entrypoint drops to its image's user: the bridge
    to `bridge`, Mosquitto to `mosquitto`, nginx's workers to `nginx` (scripts/image-users.tsv);
    Home Assistant and hass-configurator run as root in their images too."""
    if os.geteuid() != 0:
        pytest.skip("the demo drops to the images' users only when started as root")
    users = image_users()
    expected = {"bridge": users["meter-bridge"], "mosquitto": users["mqtt"]}
    for program, user in expected.items():
        pid = int(stack.supervisorctl("pid", program).stdout.strip())
        assert process_ids(pid) == (user.uid, user.gid), program
    master = int(stack.supervisorctl("pid", "nginx").stdout.strip())
    workers = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat") if _parent(p) == master]
    assert workers, "nginx has workers"
    assert {process_ids(pid) for pid in workers} == {(users["nginx"].uid, users["nginx"].gid)}


def _parent(stat_file: Path) -> int:
    """The parent pid in a /proc/<pid>/stat file (0 when the process is gone)."""
    try:
        return int(stat_file.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port` (from /proc/net/tcp{,6})."""
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port_hex = local.split(":")
                if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(address)
                # the kernel prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
                found.add(socket.inet_ntop(socket.AF_INET if width == 4 else socket.AF_INET6, words))
    return found


def demo_meter(stack: Stack, meter_id: str) -> HouseholdModel:
    """The demo's simulated meter `meter_id`, as its bridge configuration describes it."""
    env = {"DEMO_MQTT_PORT": "1", "DEMO_HEALTH_PORT": "1", "DEMO_STATE_DIR": "/", "MQTT_PASSWORD": "unused"}
    config = load_config(stack.demo_dir / "bridge" / "config.yaml", env)
    (source,) = (s for s in config.sources if isinstance(s, SimulatedSourceConfig) and s.id == meter_id)
    return HouseholdModel(source)


# The two tests below need the stack past its first 5-minute statistics compile (and the join)
# and past HA's 5-minute HTTP trial window, so they come last and wait for them (up to ~6 minutes).


# It waits (8 min at most, a hang bound) for the recorder's first 5-minute compile and the join
# after it: when the tests before it are quick, that alone is longer than the suite's 300 s.
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("meter", "entity_id"), [("heat_pump", "sensor.hems_heat_pump_energy_import")])
async def test_backfilled_week_joins_what_the_recorder_compiles(stack: Stack, meter: str, entity_id: str) -> None:
    """HA's recorder continues a total_increasing sum only from its own 5-minute statistics, so
    the first compile starts again at 0; demo_backfill.py --join lifts it onto the week. Then the
    change over the last hours (imported rows + compiled ones) is the household's energy over
    that span (unjoined, it is minus the whole week)."""
    log = stack.demo_dir / "logs" / "backfill.log"
    async with asyncio.timeout(8 * 60):
        while f"{entity_id}: joined" not in log.read_text():
            await asyncio.sleep(5)
    async with stack.ha.websocket() as ws:
        start = datetime.fromtimestamp(time.time() - 3600, UTC).isoformat()
        found = await ws.call(
            "recorder/statistics_during_period",
            start_time=start,
            statistic_ids=[entity_id],
            period="5minute",
            types=["sum"],
        )
        compiled_until = found[entity_id][-1]["end"] / 1000
        since = math.floor(compiled_until / 3600) * 3600 - 3 * 3600
        summary = await ws.call(
            "recorder/statistic_during_period",
            statistic_id=entity_id,
            fixed_period={
                "start_time": datetime.fromtimestamp(since, UTC).isoformat(),
                "end_time": datetime.fromtimestamp(compiled_until, UTC).isoformat(),
            },
            types=["change"],
        )
    expected, _ = demo_meter(stack, meter).energy_kwh(since, compiled_until, 2.0)
    assert expected > 0.5  # the heat pump runs every hour of a day
    # the backfill integrates the model at 10 s steps and the meter at 2 s: within a few percent
    assert summary["change"] == pytest.approx(expected, rel=0.05), (summary, expected)


# It sleeps until the stack is 5.5 minutes old: when the tests before it are quick, that alone is
# longer than the suite's 300 s per-test timeout.
@pytest.mark.timeout(600)
async def test_after_the_http_trial_window_nginx_still_serves_home_assistant(stack: Stack) -> None:
    """HA 2026 reverts a pending YAML `http:` after 5 minutes and restarts listening on
    0.0.0.0:8123 without the proxy settings: past that window nginx still reaches HA, HA answers
    on 127.0.0.1 only, nothing is pending and no repair names http."""
    await asyncio.sleep(max(0.0, stack.up_since + 5.5 * 60 - time.monotonic()))
    base = stack.https_url
    headers = {"Authorization": f"Bearer {stack.ha.token}"}
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session,
        session.get(f"{base}/api/", headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
    async with stack.ha.websocket() as ws:
        http_config = await ws.call("http/config")
        issues = (await ws.call("repairs/list_issues"))["issues"]
    assert http_config.get("pending") is None, http_config
    assert [issue for issue in issues if issue["domain"] == "http"] == []
    # HA listens on loopback only (the kernel's table of listening sockets on its port)
    assert listening_addresses(stack.ports["ha"]) == {"127.0.0.1"}
    status = stack.supervisorctl("status")
    assert status.returncode == 0, status.stdout
