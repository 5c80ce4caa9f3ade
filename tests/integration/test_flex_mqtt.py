"""Flex on a real broker: community events, invalid events, HA entities and commands, resume."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers.mosquitto import Mosquitto
from helpers.mqtt import client_for, recording
from helpers.relay_sim import relay_sim
from integration.flexutil import flex_config, flex_controller, ha_sink, running, wait_until
from meterbridge.mqtt import BrokerConnection

POWERS = {"immersion": 3000.0, "ev": 7000.0}


def event(start: datetime, **kw: object) -> bytes:
    body = {"id": "community-1", "start": start.isoformat(), "duration_s": 4, "direction": "down", "target_w": 2000}
    body.update(kw)
    return json.dumps(body).encode()


async def test_community_event_sheds_and_restores(broker: Mosquitto, base_topic: str, tmp_path: Path) -> None:
    config = flex_config(broker, base_topic, tmp_path, POWERS)
    async with (
        relay_sim(broker, base_topic, POWERS) as sim,
        running(flex_controller(config), sim) as flex,
    ):
        await wait_until(lambda: flex.stats.connected, 30, "flex connected")
        async with client_for(broker, "bridge") as client:
            # 8 s: room for a loaded machine to shed well inside the event (the bounds only stop a hang)
            start = datetime.now(UTC) + timedelta(seconds=1)
            await client.publish(f"{base_topic}/flex/event", event(start, duration_s=8), qos=1)
        # 2 kW asked: the immersion heater (3 kW, priority 0) is enough; the EV stays on.
        await sim.wait("immersion", False, 60)
        assert sim.relays["ev"].on
        await sim.wait("immersion", True, 60)
        assert all(on for _, on in sim.relays["ev"].timeline) or not sim.relays["ev"].timeline


async def test_invalid_events_are_rejected_and_change_nothing(
    broker: Mosquitto, base_topic: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = flex_config(broker, base_topic, tmp_path, POWERS)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    bad = [
        b"not json",
        b"[1, 2]",
        event(soon, target_w=None),  # neither target nor level
        event(soon, level=2),  # both
        event(soon, duration_s=-5),
        event(soon, direction="sideways"),
        json.dumps(
            {"id": "x", "start": "2026-11-21T17:00:00", "duration_s": 60, "direction": "down", "target_w": 1}
        ).encode(),  # no time zone
        event(soon, extra="field"),
        b"\xff\xfe",
    ]
    async with (
        relay_sim(broker, base_topic, POWERS) as sim,
        running(flex_controller(config), sim) as flex,
    ):
        await wait_until(lambda: flex.stats.connected, 30, "flex connected")
        async with client_for(broker, "bridge") as client:
            for payload in bad:
                await client.publish(f"{base_topic}/flex/event", payload, qos=1)
        await wait_until(lambda: flex.stats.errors["invalid_event"] == len(bad), 10, "all rejected")
        await asyncio.sleep(1.0)  # a tick or five: still nothing may happen
        assert flex.events == {}
        assert all(r.on and not r.timeline for r in sim.relays.values())
        log = tmp_path / "flex-events.jsonl"
        assert not log.exists() or "switch" not in log.read_text()
    messages = [r.getMessage() for r in caplog.records]
    # the first is logged in full (the rest are counted, rate-limited like every bad input)
    assert any("rejected invalid event" in m and "not JSON" in m for m in messages)


async def test_home_assistant_entities_and_commands_within_a_second(
    broker: Mosquitto, base_topic: str, tmp_path: Path
) -> None:
    config = flex_config(broker, base_topic, tmp_path, POWERS)
    async with (
        recording(broker, f"{base_topic}_ha/+/hems/+/config", f"{base_topic}/flex/#") as rec,
        ha_sink(config) as sink,  # flex describes its entities, the HA sink announces them
        running(flex_controller(config, sink.catalog)) as flex,
    ):
        expected = [
            "switch/hems_flex_participation",
            "select/hems_flex_mode",
            "number/hems_flex_import_limit",
            "button/hems_flex_opt_out",
            "binary_sensor/hems_flex_event_active",
            "sensor/hems_flex_event_status",
            "sensor/hems_flex_event_start",
            "sensor/hems_flex_event_end",
            "sensor/hems_flex_requested_reduction",
            "sensor/hems_flex_achieved_reduction",
            "switch/hems_flex_immersion_allow",
            "sensor/hems_flex_ev_state",
        ]
        topics = [f"{base_topic}_ha/{e.replace('/', '/hems/', 1)}/config" for e in expected]
        await rec.wait_for(lambda r: all(t in r.last for t in topics), 10)
        participation = rec.json(f"{base_topic}_ha/switch/hems/hems_flex_participation/config")
        assert participation["device"]["name"] == "HEMS Flex"
        assert participation["command_topic"] == f"{base_topic}/flex/participation/set"
        state_topic = f"{base_topic}/flex/state"
        await rec.wait_for(lambda r: state_topic in r.last, 10)
        assert rec.json(state_topic)["participation"] == "ON"
        commands = [
            ("participation", b"OFF", lambda s: s["participation"] == "OFF"),
            ("mode", b"manual", lambda s: s["mode"] == "manual"),
            ("import_limit", b"6000", lambda s: s["import_limit_w"] == 6000),
        ]
        async with client_for(broker, "observer") as ha:
            for key, payload, check in commands:
                await ha.publish(f"{base_topic}/flex/{key}/set", payload, qos=1)
                # the state is re-published at once; 10 s only bounds a hung test on a busy machine
                await rec.wait_for(lambda r, check=check: check(r.json(state_topic)), 10)
            await ha.publish(f"{base_topic}/flex/asset/ev/allow/set", b"OFF", qos=1)
            await rec.wait_for(lambda r: r.json(state_topic)["assets"]["ev"]["allowed"] == "OFF", 10)
        assert flex.settings.import_limit_w == 6000


async def test_restart_mid_event_resumes(broker: Mosquitto, base_topic: str, tmp_path: Path) -> None:
    config = flex_config(broker, base_topic, tmp_path, POWERS)
    async with relay_sim(broker, base_topic, POWERS) as sim:
        first = flex_controller(config)
        async with running(first, sim):
            await wait_until(lambda: first.stats.connected, 30, "flex connected")
            start = datetime.now(UTC)
            async with client_for(broker, "bridge") as client:
                # 16 s: the restart below must come well inside the event on a loaded machine too
                await client.publish(f"{base_topic}/flex/event", event(start, duration_s=16), qos=1)
            await sim.wait("immersion", False, 60)
        # The first controller is gone mid-event (state saved as it went). Meanwhile the
        # device fail-safe (or a person) switched the heater back on.
        sim.relays["immersion"].on = True
        saved = json.loads((tmp_path / "flex-state.json").read_text())
        assert saved["assets"]["immersion"]["state"] == "shed"
        second = flex_controller(config)
        assert second.assets["immersion"].state.value == "shed"
        assert "community-1" in second.events
        async with running(second, sim):
            # resumed: the heater is switched off again at once (re-armed), not shed anew
            await sim.wait("immersion", False, 30)
            assert sim.relays["ev"].on
            # and it comes back when the event ends
            await sim.wait("immersion", True, 60)
        kinds = [json.loads(line)["kind"] for line in (tmp_path / "flex-events.jsonl").read_text().splitlines()]
        assert "resumed" in kinds


async def test_connected_means_listening(
    broker: Mosquitto, base_topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event sent as soon as flex says it is connected is heard, even when subscribing is slow.

    Regression: `stats.connected` went true before the subscriptions, so a publish in between
    (tests do that; a loaded machine widens the gap) was lost.
    """
    subscribe = BrokerConnection.subscribe

    async def slow_subscribe(self: BrokerConnection, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.2)
        return await subscribe(self, *args, **kwargs)

    monkeypatch.setattr(BrokerConnection, "subscribe", slow_subscribe)
    config = flex_config(broker, base_topic, tmp_path, POWERS)
    async with running(flex_controller(config)) as flex:
        await wait_until(lambda: flex.stats.connected, 30, "flex connected")
        async with client_for(broker, "bridge") as client:
            await client.publish(f"{base_topic}/flex/event", event(datetime.now(UTC) + timedelta(minutes=5)), qos=1)
        await wait_until(lambda: "community-1" in flex.events, 30, "event heard")
