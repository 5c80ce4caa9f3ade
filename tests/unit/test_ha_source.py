"""The `ha` source: the pure entity parser, and the transport against a websocket double.

The double is a small aiohttp server that follows Home Assistant's documented websocket
API (auth_required / auth / auth_ok|auth_invalid, `subscribe_entities` with compressed
state events). The same source is run against the pinned Home Assistant in
tests/integration/test_kasa_homeassistant.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from meterbridge.errors import AuthError
from meterbridge.model import Event, MeterAvailability, Reading
from meterbridge.sources import SourceContext
from meterbridge.sources.ha import HaEntityConfig, HaEntityParser, HaSource, HaSourceConfig
from meterbridge.stats import SourceStats

TS = datetime(2026, 1, 1, tzinfo=UTC)
DIMMER = {"entity_id": "light.kitchen", "meter": "kitchen", "attribute": "brightness"}


def test_linear_and_table_maps() -> None:
    linear = HaEntityConfig(**DIMMER, linear={"value_max": 255, "watts_max": 60})
    assert [linear.watts(v) for v in (0, 127.5, 255, 300)] == [0.0, 30.0, 60.0, 60.0]
    table = HaEntityConfig(**DIMMER, table=[(0, 0), (100, 10), (255, 60)])
    assert [table.watts(v) for v in (-5, 50, 100, 177.5, 999)] == [0.0, 5.0, 10.0, 35.0, 60.0]


def test_parser_follows_added_changed_and_removed_states() -> None:
    parser = HaEntityParser([HaEntityConfig(**DIMMER, linear={"value_max": 255, "watts_max": 60, "watts_min": 0})])
    readings, available = parser.feed({"a": {"light.kitchen": {"s": "on", "a": {"brightness": 255}}}}, TS)
    assert [r.value for r in readings] == [60.0]
    assert available == {"kitchen": True}
    readings, _ = parser.feed({"c": {"light.kitchen": {"+": {"a": {"brightness": 51}}}}}, TS)
    assert [r.value for r in readings] == [12.0]
    readings, _ = parser.feed({"c": {"light.kitchen": {"+": {"s": "off"}, "-": {"a": ["brightness"]}}}}, TS)
    assert [r.value for r in readings] == [0.0]
    readings, available = parser.feed({"c": {"light.kitchen": {"+": {"s": "unavailable"}}}}, TS)
    assert (readings, available) == ([], {"kitchen": False})
    assert parser.feed({"a": {"light.other": {"s": "on", "a": {}}}}, TS) == ([], {})


def test_on_off_switch_with_an_on_power_and_custom_state_values() -> None:
    """Issue 20: a switch's `on` was unavailable; SenseLink maps it to max_watts (on_state_value)."""
    parser = HaEntityParser(
        [
            HaEntityConfig(entity_id="switch.dehumidifier", meter="dehumidifier", on_states=["on"], on_w=42, off_w=1),
            HaEntityConfig(
                entity_id="fan.attic",
                meter="attic",
                on_states=["running"],
                off_states=["idle", "stopped"],
                on_w=35,
            ),
        ]
    )
    readings, available = parser.feed({"a": {"switch.dehumidifier": {"s": "on", "a": {}}}}, TS)
    assert ([r.value for r in readings], available) == ([42.0], {"dehumidifier": True})
    readings, _ = parser.feed({"c": {"switch.dehumidifier": {"+": {"s": "off"}}}}, TS)
    assert [r.value for r in readings] == [1.0]
    readings, _ = parser.feed({"a": {"fan.attic": {"s": "running", "a": {}}}}, TS)
    assert [r.value for r in readings] == [35.0]
    readings, _ = parser.feed({"c": {"fan.attic": {"+": {"s": "stopped"}}}}, TS)
    assert [r.value for r in readings] == [0.0]
    readings, available = parser.feed({"c": {"fan.attic": {"+": {"s": "off"}}}}, TS)  # not one of its states
    assert (readings, available) == ([], {"attic": False})


def test_nested_attribute_paths_for_power_and_for_the_state() -> None:
    parser = HaEntityParser(
        [
            HaEntityConfig(entity_id="sensor.pump", meter="pump", attribute="usage.power"),
            HaEntityConfig(
                entity_id="climate.heat_pump",
                meter="heat_pump",
                state_attribute="hvac.action",
                off_states=["idle"],
                on_states=["heating"],
                on_w=2400,
            ),
        ]
    )
    readings, _ = parser.feed({"a": {"sensor.pump": {"s": "ok", "a": {"usage": {"power": 310.5}}}}}, TS)
    assert [r.value for r in readings] == [310.5]
    event = {"a": {"climate.heat_pump": {"s": "heat", "a": {"hvac": {"action": "heating"}}}}}
    assert [r.value for r in parser.feed(event, TS)[0]] == [2400.0]
    event = {"c": {"climate.heat_pump": {"+": {"a": {"hvac": {"action": "idle"}}}}}}
    assert [r.value for r in parser.feed(event, TS)[0]] == [0.0]
    readings, _ = parser.feed({"c": {"sensor.pump": {"+": {"a": {"usage": "n/a"}}}}}, TS)
    assert [r.value for r in readings] == [0.0]  # the path leads nowhere: like a light without brightness


def test_on_states_need_an_on_power() -> None:
    with pytest.raises(ValueError, match="go together"):
        HaEntityConfig(entity_id="switch.x", meter="x", on_states=["on"])
    with pytest.raises(ValueError, match="both on and off"):
        HaEntityConfig(entity_id="switch.x", meter="x", on_states=["off"], on_w=5)


class HaDouble:
    """Home Assistant's websocket API, the part the source uses, as documented."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.connections = 0
        self.subscriptions: list[dict[str, Any]] = []
        self.sockets: list[web.WebSocketResponse] = []

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        await ws.send_json({"type": "auth_required", "ha_version": "2024.3.3"})
        auth = await ws.receive_json()
        if auth.get("access_token") != self.token:
            await ws.send_json({"type": "auth_invalid", "message": "Invalid access token or password"})
            await ws.close()
            return ws
        await ws.send_json({"type": "auth_ok", "ha_version": "2024.3.3"})
        command = await ws.receive_json()
        self.subscriptions.append(command)
        await ws.send_json({"id": command["id"], "type": "result", "success": True, "result": None})
        event = {"a": {"input_number.dimmer": {"s": "128.0", "a": {"min": 0, "max": 255}, "c": "x", "lc": 1.0}}}
        await ws.send_json({"id": command["id"], "type": "event", "event": event})
        self.sockets.append(ws)
        async for _message in ws:
            pass
        return ws


async def _serve(double: HaDouble) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/api/websocket", double.handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"ws://127.0.0.1:{port}/api/websocket"


def _source(url: str, token: str) -> HaSource:
    entity = {"entity_id": "input_number.dimmer", "meter": "dimmer", "table": [(0, 0), (255, 51)]}
    return HaSource(HaSourceConfig(type="ha", id="ha", url=url, token=token, entities=[entity]))


async def test_source_subscribes_emits_and_reconnects() -> None:
    double = HaDouble("good-token")
    runner, url = await _serve(double)
    events: list[Event] = []
    ctx = SourceContext("ha", SourceStats("ha", 300), events.append)
    task = asyncio.create_task(_source(url, "good-token").run(ctx))
    try:
        async with asyncio.timeout(10):
            while not any(isinstance(e, Reading) for e in events):
                await asyncio.sleep(0.05)
        reading = next(e for e in events if isinstance(e, Reading))
        assert (reading.meter_id, reading.value) == ("dimmer", 25.6)
        assert double.subscriptions[0]["type"] == "subscribe_entities"
        assert double.subscriptions[0]["entity_ids"] == ["input_number.dimmer"]
        # HA restarts: the meter goes unavailable, the source reconnects and resubscribes
        await double.sockets[0].close()
        async with asyncio.timeout(10):
            while double.connections < 2 or len(double.subscriptions) < 2:
                await asyncio.sleep(0.05)
        assert any(isinstance(e, MeterAvailability) and e.meter_id == "dimmer" and not e.available for e in events)
        assert Counter(ctx.stats.errors)["connection"] >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()


async def test_a_refused_token_raises_auth_error() -> None:
    double = HaDouble("good-token")
    runner, url = await _serve(double)
    try:
        with pytest.raises(AuthError):
            await _source(url, "wrong").run(SourceContext("ha", SourceStats("ha", 300), lambda _e: None))
    finally:
        await runner.cleanup()
