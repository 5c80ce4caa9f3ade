"""The pinned Home Assistant + openleadr's VTN: the HEMS Flex entities drive flex.

Pressing "Opt out" through HA's REST API restores the relay and the VTN sees optOut;
switching "Participation" off in HA makes the next event opt out. Needs the HA test
infrastructure (`tests/helpers/homeassistant.py`, `make setup-ha`) from the `utility`
branch: skipped until it is merged.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers.mosquitto import Mosquitto
from helpers.relay_sim import relay_sim
from integration.flexutil import (
    SETTLE_IMMERSION_KWH,
    SETTLE_SITE_KWH,
    flex_config,
    flex_controller,
    ha_sink,
    running,
    settlement_event,
    wait_until,
    write_settlement_history,
)
from integration.test_flex_openadr import POWERS, Vtn, expect_next_event_opted_out, ven_flex

pytest.importorskip("helpers.homeassistant")
pytestmark = pytest.mark.homeassistant


async def ha_state(ha: Any, entity_id: str) -> str | None:
    try:
        return str((await ha.rest("GET", f"/api/states/{entity_id}"))["state"])
    except AssertionError:  # 404 until discovery has created it
        return None


async def wait_ha(ha: Any, entity_id: str, expected: str, timeout: float) -> None:
    """Wait until HA shows `expected`; `timeout` is a hang bound (generous: a loaded machine is slow)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (state := await ha_state(ha, entity_id)) != expected:
        assert loop.time() < deadline, f"{entity_id} is {state!r}, not {expected!r} after {timeout} s"
        await asyncio.sleep(0.2)


async def test_opt_out_button_and_participation_switch_in_home_assistant(
    homeassistant_mqtt: Any, broker: Mosquitto, base_topic: str, tmp_path: Path
) -> None:
    ha = homeassistant_mqtt
    vtn = Vtn(tmp_path)
    await vtn.server.run()
    try:
        config = flex_config(broker, base_topic, tmp_path, POWERS, discovery="homeassistant", **ven_flex(vtn))
        async with (
            ha_sink(config) as sink,  # announces flex's entities and owns their availability, as in the bridge
            relay_sim(broker, base_topic, POWERS) as sim,
            running(flex_controller(config, sink.catalog), sim) as flex,
        ):
            await wait_ha(ha, "switch.hems_flex_participation", "on", 60)
            await wait_ha(ha, "button.hems_flex_opt_out", "unknown", 60)
            await wait_until(lambda: vtn.registered, 60, "VEN registration")
            event_id = vtn.add_event(datetime.now(UTC) + timedelta(seconds=1), duration_s=120, level=1)
            await sim.wait("immersion", False, 60)
            await wait_ha(ha, "binary_sensor.hems_flex_event_active", "on", 60)
            await wait_ha(ha, "sensor.hems_flex_immersion_state", "shed", 60)
            await ha.rest("POST", "/api/services/button/press", {"entity_id": "button.hems_flex_opt_out"})
            await sim.wait("immersion", True, 60)
            await wait_until(lambda: (event_id, "optOut") in vtn.opt_responses, 60, "optOut at the VTN")
            await wait_ha(ha, "sensor.hems_flex_event_status", "opted_out", 60)
            await wait_ha(ha, "sensor.hems_flex_immersion_state", "normal", 60)
            # Participation off in HA: the next event is opted out and nothing switches.
            await ha.rest("POST", "/api/services/switch/turn_off", {"entity_id": "switch.hems_flex_participation"})
            await wait_until(lambda: not flex.settings.participation, 60, "participation off")
            await expect_next_event_opted_out(vtn, sim)
    finally:
        await vtn.server.stop()


async def test_delivered_energy_and_per_event_history_in_home_assistant(
    homeassistant_mqtt: Any, broker: Mosquitto, base_topic: str, tmp_path: Path
) -> None:
    """A settled event (issue 27): the last event's delivered kWh and share, the history as attributes."""
    ha = homeassistant_mqtt
    write_settlement_history(tmp_path / "flex-ledger.jsonl")
    config = flex_config(broker, base_topic, tmp_path, POWERS, discovery="homeassistant")
    async with (
        ha_sink(config) as sink,
        relay_sim(broker, base_topic, POWERS) as sim,
        running(flex_controller(config, sink.catalog), sim) as flex,
    ):
        await wait_ha(ha, "sensor.hems_flex_delivered_energy", "unknown", 60)  # nothing settled yet
        assert flex.submit_event(settlement_event())
        expected_kwh = round(sum(SETTLE_SITE_KWH), 3)
        await wait_ha(ha, "sensor.hems_flex_delivered_energy", str(expected_kwh), 60)
        await wait_ha(ha, "sensor.hems_flex_delivered_share", "80.0", 60)
        state = await ha.rest("GET", "/api/states/sensor.hems_flex_delivered_energy")
    assert state["attributes"]["unit_of_measurement"] == "kWh"
    assert state["attributes"]["device_class"] == "energy"
    assert state["attributes"]["event_id"] == "settle-1"
    (event,) = state["attributes"]["events"]
    assert event["event_id"] == "settle-1"
    assert event["status"] == "delivered"
    assert event["method"] == "previous_days"
    assert event["delivered_kwh"] == expected_kwh
    assert event["assets"] == {"immersion": round(sum(SETTLE_IMMERSION_KWH), 3), "ev": 0.0}
