"""Flex event parsing (MQTT JSON and OpenADR), the published schema, entities and persistence."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterbridge.app import build_flex
from meterbridge.config import BridgeConfig
from meterbridge.errors import ParseError
from meterbridge.flex.actuators import MqttActuator
from meterbridge.flex.assets import in_windows
from meterbridge.flex.controller import FlexController
from meterbridge.flex.entities import FlexTopics, flex_entities
from meterbridge.flex.events import FlexEvent, event_schema, parse_event_message, target_for_level
from meterbridge.flex.openadr import event_from_openadr
from meterbridge.flex.policy import AssetState, Direction
from meterbridge.flex.store import write_atomically
from meterbridge.ha_entities import EntityCatalog, discovery_config
from meterbridge.sinks.homeassistant.discovery import Topics

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 11, 21, 17, 0, tzinfo=UTC)


def test_valid_message() -> None:
    payload = b'{"id": "dfs-1", "start": "2026-11-21T17:00:00Z", "duration_s": 3600, "direction": "down", "level": 2}'
    event = parse_event_message(payload, "mqtt")
    assert event.start == START
    assert event.end == START + timedelta(hours=1)
    assert (event.direction, event.level, event.target_w) == (Direction.DOWN, 2, None)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", "not JSON"),
        (b'{"id": "a", "start": "2026-11-21T17:00:00", "duration_s": 1, "direction": "down", "target_w": 1}', "start"),
        (b'{"id": "a", "start": "2026-11-21T17:00:00Z", "duration_s": 1, "direction": "down"}', "exactly one"),
        (b'{"id": "a b", "start": "2026-11-21T17:00:00Z", "duration_s": 1, "direction": "up", "level": 1}', "id"),
        (
            b'{"id": "a", "start": "2026-11-21T17:00:00Z", "duration_s": 90000, "direction": "up", "level": 1}',
            "duration_s",
        ),
    ],
)
def test_invalid_messages_say_what_is_wrong(payload: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_event_message(payload, "mqtt")


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_parse_error(payload: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_event_message(payload, "mqtt")


@given(
    st.dictionaries(
        st.sampled_from(["id", "start", "duration_s", "direction", "target_w", "level", "x"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=20), st.floats(allow_nan=True)),
    )
)
def test_arbitrary_json_raises_only_parse_error(data: dict[str, object]) -> None:
    try:
        event = parse_event_message(json.dumps(data).encode(), "mqtt")
    except ParseError:
        return
    assert event.end > event.start


def test_published_schema_is_current() -> None:
    published = json.loads((REPO / "docs" / "flex-event.schema.json").read_text())
    assert published == event_schema(), "run: .venv/bin/python -m meterbridge.flex.events > docs/flex-event.schema.json"


def test_level_targets() -> None:
    assert target_for_level(3, 9000) == 9000
    assert target_for_level(1, 9000) == 3000


def openadr_event(signal: dict[str, object], status: str = "far") -> dict[str, object]:
    return {
        "event_descriptor": {"event_id": "ev1", "modification_number": 2, "event_status": status},
        "active_period": {"dtstart": START, "duration": timedelta(minutes=30)},
        "event_signals": [signal],
    }


def test_openadr_mapping() -> None:
    simple = event_from_openadr(
        openadr_event({"signal_name": "simple", "signal_type": "level", "intervals": [{"signal_payload": 2.0}]})
    )
    assert simple is not None
    assert (simple.level, simple.direction, simple.modification) == (2, Direction.DOWN, 2)
    assert simple.end == START + timedelta(minutes=30)
    up = event_from_openadr(
        openadr_event(
            {"signal_name": "LOAD_DISPATCH", "signal_type": "delta", "intervals": [{"signal_payload": 1500.0}]}
        )
    )
    assert up is not None
    assert (up.direction, up.target_w) == (Direction.UP, 1500.0)
    assert event_from_openadr(openadr_event({"signal_name": "simple", "intervals": [{"signal_payload": 0}]})) is None
    cancelled = event_from_openadr(
        openadr_event({"signal_name": "simple", "intervals": [{"signal_payload": 1}]}, "cancelled")
    )
    assert cancelled is not None
    assert cancelled.cancelled


def test_windows() -> None:
    t = datetime(2026, 1, 1, 23, 30).time()
    assert in_windows([], t)
    assert in_windows(["22:00-06:00"], t)
    assert not in_windows(["06:00-22:00"], t)


def config(tmp_path: Path, **flex: object) -> BridgeConfig:
    return BridgeConfig.model_validate(
        {
            "mqtt": {"username": "u", "password": "p"},
            "flex": {
                "enabled": True,
                "state_path": str(tmp_path / "state.json"),
                "log_path": str(tmp_path / "log.jsonl"),
                "assets": [
                    {"id": "heater", "actuator": {"type": "mqtt", "command_topic": "x/heater"}, "rated_power_w": 3000}
                ],
                **flex,
            },
        }
    )


def test_config_rejects_unsafe_timers_and_duplicates(tmp_path: Path) -> None:
    asset = {"id": "h", "actuator": {"type": "mqtt", "command_topic": "t"}, "rated_power_w": 1}
    with pytest.raises(ValueError, match="min_off_s"):
        config(tmp_path, assets=[{**asset, "min_off_s": 100, "max_shed_s": 50}])
    with pytest.raises(ValueError, match="duplicate asset ids"):
        config(tmp_path, assets=[asset, asset])
    with pytest.raises(ValueError, match="HH:MM"):
        config(tmp_path, assets=[{**asset, "windows": ["25:00-01:00"]}])


def controller(cfg: BridgeConfig, **kwargs: Any) -> FlexController:
    """The flex controller as the bridge builds it (nothing connects until `start`)."""
    return build_flex(cfg.mqtt_context, cfg.flex, EntityCatalog(), **kwargs)


def test_discovery_entities_are_unique_and_on_one_device(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    messages = [discovery_config(e, Topics("hems"), "home") for e in flex_entities(FlexTopics("hems"), cfg.flex.assets)]
    ids = [payload["unique_id"] for _, payload in messages]
    assert len(ids) == len(set(ids)) == 15  # 13 global (the delivery sensors of issue 27 among them) + 2 of the asset
    assert {payload["device"]["name"] for _, payload in messages} == {"HEMS Flex"}
    assert all(p["availability_topic"] == "hems/bridge/availability" for _, p in messages)


async def test_submit_events_and_state_survive_a_restart(tmp_path: Path) -> None:
    now = [START]
    cfg = config(tmp_path)
    flex = controller(cfg, clock=lambda: now[0])
    event = FlexEvent("e1", "mqtt", Direction.DOWN, START, START + timedelta(hours=1), 1000.0, None)
    assert flex.submit_event(event)
    flex.site_import_w = 4000.0
    sent: list[tuple[str, bytes]] = []

    async def publish(topic: str, payload: bytes, retain: bool) -> None:
        sent.append((topic, payload))

    actuator = flex.assets["heater"].actuator
    assert isinstance(actuator, MqttActuator)
    actuator._publish = publish  # the broker path is tested in integration
    await flex.tick()
    assert sent == [("x/heater", b"OFF")]
    assert flex.assets["heater"].state is AssetState.SHED
    again = controller(cfg, clock=lambda: now[0])
    assert again.assets["heater"].state is AssetState.SHED
    assert again.events["e1"].baseline_w == 4000.0
    # participation off: the next event is refused
    await again.handle_command(again.topics.command("participation"), b"OFF")
    assert not again.submit_event(FlexEvent("e2", "mqtt", Direction.DOWN, START, START, 1.0, None))


def test_damaged_state_file_starts_fresh(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    write_atomically(cfg.flex.state_path, '{"version": 1, "settings": {}}')
    flex = controller(cfg)
    assert flex.events == {}
    assert flex.assets["heater"].state is AssetState.NORMAL
