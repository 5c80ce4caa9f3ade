"""`type: mqtt`: config rules, presets, the availability/timeout rule and properties of the parser.

The documented payload shapes (Tasmota, ESPHome, OpenEVSE) are fixtures under
`tests/fixtures/mqtt/`, walked by `test_fixtures.py`; the broker path is
`tests/integration/test_mqtt_generic_broker.py`.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from meterbridge.config import load_config
from meterbridge.errors import ConfigError, ParseError
from meterbridge.model import Quantity
from meterbridge.sources.mqtt.config import TASMOTA_TIMEOUT_S, MqttMeterConfig
from meterbridge.sources.mqtt.parser import MeterParser, Tracker

TS = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)


def meter(**fields: Any) -> MqttMeterConfig:
    return MqttMeterConfig.model_validate({"id": "m", **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"preset": "tasmota"}, "needs `device`"),
        ({"device": "plug"}, "belong to a preset"),
        ({}, "nothing to read"),
        ({"values": [{"quantity": "power", "key": "p"}]}, "no topic"),
        ({"state_topic": "a/b", "values": [{"quantity": "power", "unit": "kWh"}]}, "cannot be given in 'kWh'"),
        ({"state_topic": "a/#", "values": [{"quantity": "power"}]}, "pattern"),
        ({"state_topic": "a", "values": [{"quantity": "power", "key": "a..b"}]}, "single dots"),
        ({"state_topic": "a", "values": [{"quantity": "power"}], "on_off": {"topic": "s", "on_w": 5}}, "on_off"),
        ({"on_off": {"topic": "s", "on_w": 5, "on_values": ["1"], "off_values": ["1"]}}, "both on and off"),
        ({"preset": "esphome", "device": "node"}, "sensors"),
    ],
)
def test_config_errors_say_what_is_wrong(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        meter(**fields)


def test_config_error_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("""mqtt: {username: bridge, password: x}
sources:
  - type: mqtt
    id: plugs
    meters:
      - id: kettle
        preset: tasmota
""")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert any(f"{path}:6" in problem and "sources[0].meters[0]" in problem for problem in caught.value.problems), (
        caught.value.problems
    )


def test_tasmota_preset_topics_and_own_values_replace_the_presets() -> None:
    plan = meter(
        preset="tasmota",
        device="heatpump",
        values=[
            {"quantity": "power", "topic": "tele/heatpump/SENSOR", "key": "ENERGY.ApparentPower"},
            {"quantity": "flow_temperature", "topic": "tele/heatpump/SENSOR", "key": "DS18B20-1.Temperature"},
        ],
    ).plan()
    assert plan.subscriptions == ["tele/heatpump/LWT", "tele/heatpump/SENSOR"]
    assert plan.timeout_s == TASMOTA_TIMEOUT_S
    assert (plan.payload_available, plan.payload_not_available) == ("Online", "Offline")
    paths = {e.quantity: e.path for e in plan.topics["tele/heatpump/SENSOR"]}
    assert paths[Quantity.POWER] == ("ENERGY", "ApparentPower")
    assert paths[Quantity.FLOW_TEMPERATURE] == ("DS18B20-1", "Temperature")
    assert len([q for q in plan.topics["tele/heatpump/SENSOR"] if q.quantity is Quantity.POWER]) == 1


def test_own_timeout_and_availability_win_over_the_presets() -> None:
    plan = meter(preset="tasmota", device="p", timeout_s=30, availability_topic="p/alive", payload_available="1").plan()
    assert (plan.timeout_s, plan.availability_topic, plan.payload_available) == (30, "p/alive", "1")


def test_tracker_timeout_and_availability_topic() -> None:
    tracker = Tracker(meter(state_topic="a", values=[{"quantity": "power"}], timeout_s=10).plan())
    assert tracker.available(0.0) is False  # nothing heard yet
    assert tracker.reading(100.0) is True
    assert tracker.available(110.0) is True
    assert tracker.available(110.5) is False  # timed out
    assert tracker.reading(111.0) is True  # back with the next reading
    assert tracker.announced(False, 112.0) is False  # the device said offline
    assert tracker.reading(113.0) is False  # ... and stays so until it says online
    assert tracker.announced(True, 114.0) is True


def test_without_timeout_a_meter_stays_available() -> None:
    tracker = Tracker(meter(state_topic="a", values=[{"quantity": "power"}]).plan())
    tracker.reading(0.0)
    assert tracker.available(1e9) is True


SHAPES = [
    meter(preset="tasmota", device="t", channel=0),
    meter(preset="esphome", device="e", sensors={"power": "p"}),
    meter(preset="openevse", device="o"),
    meter(state_topic="s", values=[{"quantity": "heat_energy", "key": "a.0.b", "unit": "Wh"}]),
    meter(on_off={"topic": "s", "key": "state", "on_w": 10}),
]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_parse_error(data: bytes) -> None:
    for config in SHAPES:
        parser = MeterParser(config.plan())
        for topic in parser.plan.subscriptions:
            with contextlib.suppress(ParseError):
                parser.parse(topic, data, TS)
            parser.availability(data)


JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(document=JSON)
def test_any_json_gives_readings_or_named_drops_never_an_exception(document: object) -> None:
    """Missing keys, wrong types, lists and huge numbers are dropped with a reason, not raised."""
    payload = json.dumps(document).encode()
    for config in SHAPES:
        parser = MeterParser(config.plan())
        for topic in parser.plan.topics:
            outcome = parser.parse(topic, payload, TS)
            wanted = len(parser.plan.topics[topic])
            assert len(outcome.readings) + len(outcome.dropped) == wanted
