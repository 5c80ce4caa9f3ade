"""The whole appliance on one machine (`make demo`'s stack under supervisord), end to end:
the bridge's sensors in Home Assistant, the pre-wired Energy dashboard, nginx in front, and
supervisord restarting a killed bridge while HA sees it go and come back."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
from typing import Any

import aiohttp
import pytest

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
        async with asyncio.timeout(30):
            while changes < 2:
                event = await ws.next_event()
                new_state = event["data"]["new_state"]
                if event["data"]["entity_id"] == "sensor.hems_grid_power" and new_state and numeric(new_state):
                    changes += 1


async def test_energy_dashboard_is_wired_and_valid(stack: Stack) -> None:
    await wait_for_state(stack, "sensor.hems_solar_energy_export", numeric)
    async with stack.ha.websocket() as ws:
        prefs = await ws.call("energy/get_prefs")
        grid, solar = prefs["energy_sources"]
        assert grid["flow_from"][0]["stat_energy_from"] == "sensor.hems_grid_energy_import"
        assert grid["flow_to"][0]["stat_energy_to"] == "sensor.hems_grid_energy_export"
        assert solar["stat_energy_from"] == "sensor.hems_solar_energy_export"
        validation = await ws.call("energy/validate")
    issues = [issue for group in (*validation["energy_sources"], *validation["device_consumption"]) for issue in group]
    # HA compiles long-term statistics only every 5 minutes (at :00, :05...), so a stack
    # younger than that has no statistics yet for the energy sensors: that one finding is
    # expected. Anything else (wrong unit, device class, state class, untracked by the
    # recorder, missing entity) is a defect of the bridge or of ha-config.
    unexpected = [issue for issue in issues if issue["type"] != "statistics_not_defined"]
    assert unexpected == [], unexpected
    assert validation["energy_sources"], "the grid and solar sources were validated"


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
    status = stack.supervisorctl("status")
    assert status.returncode == 0, status.stdout  # 3 when any program is not RUNNING


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
    await stack.ha.rest("POST", "/api/services/switch/turn_off", {"entity_id": "switch.hems_flex_participation"})
    started = time.monotonic()
    await wait_for_state(stack, "switch.hems_flex_participation", lambda s: s["state"] == "off", timeout=10)
    elapsed = time.monotonic() - started
    log = (stack.demo_dir / "logs" / "flex-events.jsonl").read_text()
    assert "participation" in log
    await stack.ha.rest("POST", "/api/services/switch/turn_on", {"entity_id": "switch.hems_flex_participation"})
    await wait_for_state(stack, "switch.hems_flex_participation", lambda s: s["state"] == "on", timeout=10)
    assert elapsed < 5  # the issue asks for effect within a second; REST polling adds up to 0.5 s here
