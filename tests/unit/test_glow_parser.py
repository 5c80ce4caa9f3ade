"""The Glow CAD parser: fixture payloads with their expected readings, sentinels, properties."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterbridge.errors import ParseError
from meterbridge.sources.glow.parser import GlowTopic, parse_meter, parse_state, parse_topic

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "glow"
NOW = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)
CASES = sorted(p.name.removesuffix(".payload.json") for p in FIXTURES.glob("*.payload.json"))


def test_fixtures_exist() -> None:
    assert len(CASES) >= 5


def test_the_sentinel_never_becomes_a_reading() -> None:
    for case in CASES:
        expected = json.loads((FIXTURES / f"{case}.expected.json").read_text())
        outcome = parse_meter(expected["kind"], (FIXTURES / f"{case}.payload.json").read_bytes(), "m", NOW)
        assert all(abs(r.value + 8388.608) > 1e-3 for r in outcome.readings)


def test_topics() -> None:
    assert parse_topic("glow", "glow/E8DB84000001/SENSOR/electricitymeter") == GlowTopic(
        "E8DB84000001", "electricitymeter"
    )
    assert parse_topic("glow", "glow/E8DB84000001/SENSOR/gasmeter") == GlowTopic("E8DB84000001", "gasmeter")
    assert parse_topic("glow", "glow/E8DB84000001/STATE") == GlowTopic("E8DB84000001", "STATE")
    assert parse_topic("glow", "glow/E8DB84000001/SENSOR/other") is None
    assert parse_topic("glow", "glowing/x/STATE") is None
    assert parse_topic("home/glow", "home/glow/abc/STATE") == GlowTopic("abc", "STATE")


def test_state() -> None:
    state = parse_state(
        b'{"software":"v1.8.12","timestamp":"2022-06-24T13:02:29Z","hardware":"GLOW-IHD-01-1v4-SMETS2",'
        b'"wifistamac":"E8DB84000001","smetsversion":"SMETS2","eui":"70:B3:D5:21:E0:00:00:01",'
        b'"zigbee":"1.2.5","han":{"rssi":-71,"status":"joined","lqi":96}}'
    )
    assert (state.software, state.hardware, state.han_joined) == ("v1.8.12", "GLOW-IHD-01-1v4-SMETS2", True)
    assert parse_state(b'{"han":{"status":"rejoining"}}').han_joined is False
    assert parse_state(b"{}").han_joined is None


@pytest.mark.parametrize(
    "payload", [b"", b"[]", b"{}", b'{"electricitymeter": 5}', b'{"gasmeter": {}}', b"\x00", b"Infinity"]
)
def test_bad_electricity_messages(payload: bytes) -> None:
    with pytest.raises(ParseError):
        parse_meter("electricitymeter", payload, "m", NOW)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
meter_keys = st.sampled_from(
    [
        "electricitymeter",
        "gasmeter",
        "energy",
        "import",
        "export",
        "cumulative",
        "units",
        "price",
        "unitrate",
        "standingcharge",
        "power",
        "value",
        "timestamp",
    ]
)
meter_like = st.recursive(
    json_values, lambda children: st.dictionaries(meter_keys, children, max_size=5), max_leaves=25
)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_parse_error(data: bytes) -> None:
    for parse in (
        lambda p: parse_meter("electricitymeter", p, "m", NOW),
        lambda p: parse_meter("gasmeter", p, "m", NOW),
        parse_state,
    ):
        with contextlib.suppress(ParseError):
            parse(data)


@given(meter_like)
def test_arbitrary_json_raises_only_parse_error(value: object) -> None:
    payload = json.dumps(value).encode()
    for kind in ("electricitymeter", "gasmeter"):
        try:
            outcome = parse_meter(kind, payload, "m", NOW)  # type: ignore[arg-type]
        except ParseError:
            continue
        assert all(r.value >= 0 for r in outcome.readings if r.quantity.value in ("energy_import", "gas_energy"))
    with contextlib.suppress(ParseError):
        parse_state(payload)
