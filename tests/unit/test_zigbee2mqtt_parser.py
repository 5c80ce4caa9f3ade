"""The zigbee2mqtt parsers: fixture payloads with their expected readings, topics, properties."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterbridge.errors import ParseError
from meterbridge.sources.zigbee2mqtt.parser import (
    DeviceTable,
    Z2mDevice,
    default_meter_id,
    parse_availability,
    parse_devices,
    parse_state,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "zigbee2mqtt"
TS = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)
CASES = sorted(p.name.removesuffix(".payload.json") for p in FIXTURES.glob("*.payload.json"))


def test_fixtures_exist() -> None:
    assert len(CASES) >= 6


def _device(ieee: str, name: str, **units: str) -> Z2mDevice:
    return Z2mDevice(ieee_address=ieee, friendly_name=name, device_type="Router", units=units or {"power": "W"})


def test_table_routes_names_with_slashes_and_follows_a_rename() -> None:
    table = DeviceTable("z2m", "zigbee2mqtt")
    plug = _device("0xA4C1380000000001", "kitchen/dishwasher plug")
    change = table.update([plug])
    assert change.subscribe == [
        "zigbee2mqtt/kitchen/dishwasher plug",
        "zigbee2mqtt/kitchen/dishwasher plug/availability",
    ]
    assert change.added == [plug]
    assert table.route("zigbee2mqtt/kitchen/dishwasher plug") == (plug, "state")
    assert table.route("zigbee2mqtt/kitchen/dishwasher plug/availability") == (plug, "availability")
    assert table.route("zigbee2mqtt/kitchen") is None
    assert table.meter_id(plug) == "z2m_a4c1380000000001"

    renamed = _device("0xA4C1380000000001", "utility/dishwasher")
    change = table.update([renamed])
    assert change.renamed == [(plug, renamed)]
    assert change.added == []
    assert change.removed == []
    assert change.unsubscribe == [
        "zigbee2mqtt/kitchen/dishwasher plug",
        "zigbee2mqtt/kitchen/dishwasher plug/availability",
    ]
    new_topics = ["zigbee2mqtt/utility/dishwasher", "zigbee2mqtt/utility/dishwasher/availability"]
    assert change.subscribe == new_topics
    assert table.route("zigbee2mqtt/kitchen/dishwasher plug") is None
    assert table.meter_id(renamed) == "z2m_a4c1380000000001"

    change = table.update([])
    assert change.removed == [renamed]
    assert sorted(change.unsubscribe) == [
        "zigbee2mqtt/utility/dishwasher",
        "zigbee2mqtt/utility/dishwasher/availability",
    ]


def test_table_selection_mapping_and_wildcards() -> None:
    table = DeviceTable("z2m", "z", selected=["boiler", "0x02"], meter_ids={"boiler": "boiler", "0x02": "heat_pump"})
    boiler = Z2mDevice("0x01", "boiler")  # selected by name even without metering exposes
    heat_pump = _device("0x02", "hp")
    other = _device("0x03", "other plug")
    bad = _device("0x04", "bad+name")
    change = table.update([boiler, heat_pump, other, bad])
    assert change.added == [boiler, heat_pump]
    assert [table.meter_id(d) for d in change.added] == ["boiler", "heat_pump"]
    table = DeviceTable("z2m", "z")
    change = table.update([bad])
    assert change.added == []
    assert change.skipped
    assert change.subscribe == []
    # a mapping keyed by name: a rename changes the meter id, so the device is re-added
    table = DeviceTable("z2m", "z", meter_ids={"plug": "plug"})
    table.update([_device("0x05", "plug")])
    change = table.update([_device("0x05", "plug2")])
    assert [table.meter_id(d) for d in change.removed] == ["plug"]
    assert [table.meter_id(d) for d in change.added] == ["z2m_05"]


def test_default_meter_id_is_an_identifier() -> None:
    assert default_meter_id("z2m", "0x00158D0001A2B3C4") == "z2m_00158d0001a2b3c4"


@pytest.mark.parametrize("payload", [b"", b"[]", b"{", b'"online"', b'{"state": 1}', b"maybe", b"\xff"])
def test_bad_availability(payload: bytes) -> None:
    with pytest.raises(ParseError):
        parse_availability(payload)


@pytest.mark.parametrize("payload", [b"", b"{}", b"[1", b"NaN", b'{"a": 1}', b"\xff\xfe"])
def test_bad_device_lists(payload: bytes) -> None:
    with pytest.raises(ParseError):
        parse_devices(payload)


def test_deep_nesting_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_state(b"[" * 100_000 + b"]" * 100_000, "m", {}, TS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=16), children, max_size=5),
    max_leaves=20,
)
state_like = st.dictionaries(
    st.sampled_from(["power", "energy", "produced_energy", "voltage", "current", "state", "linkquality"]),
    json_values,
)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_parse_error(data: bytes) -> None:
    for parse in (
        parse_devices,
        parse_availability,
        lambda p: parse_state(p, "m", {"power": "W"}, TS),
    ):
        with contextlib.suppress(ParseError):
            parse(data)


@given(json_values | state_like, st.dictionaries(st.sampled_from(["power", "energy", "voltage"]), st.text(max_size=4)))
def test_arbitrary_json_raises_only_parse_error(value: object, units: dict[str, str]) -> None:
    payload = json.dumps(value).encode()
    for parse in (parse_devices, parse_availability, lambda p: parse_state(p, "m", units, TS)):
        with contextlib.suppress(ParseError):
            parse(payload)
