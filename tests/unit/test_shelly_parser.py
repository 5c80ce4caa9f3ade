"""The pure Shelly parser: recorded/documented payloads, status merging, fuzzing."""

from __future__ import annotations

import contextlib
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterbridge.errors import ParseError
from meterbridge.sources.shelly.parser import (
    MeterNaming,
    decode_frame,
    merge_status,
    meter_descriptions,
    parse_online,
    relay_outputs,
    status_readings,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "shelly"
TS = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)
CASES = sorted(p for p in FIXTURES.glob("*.json") if not p.name.endswith(".expected.json"))


def test_three_phase_meter_ids_and_descriptions() -> None:
    spec = json.loads((FIXTURES / "pro3em.json").read_text())
    status = spec["frames"][0]["params"]
    descriptions = {d.meter_id: d for d in meter_descriptions(status, MeterNaming("shelly_grid", "Grid"), None)}
    assert set(descriptions) == {"shelly_grid", "shelly_grid_a", "shelly_grid_b", "shelly_grid_c"}
    assert descriptions["shelly_grid_b"].phase == "B"
    assert descriptions["shelly_grid_b"].name == "Grid phase B"


def test_relay_outputs_and_online() -> None:
    assert relay_outputs({"switch:0": {"output": True}, "switch:1": {"output": False}, "pm1:0": {}}) == {
        0: True,
        1: False,
    }
    assert parse_online(b"true") is True
    assert parse_online(b"false") is False
    with pytest.raises(ParseError):
        parse_online(b"maybe")


def test_reply_frames() -> None:
    ok = decode_frame(b'{"id": 7, "src": "shellyplus1pm-x", "dst": "me", "result": {"was_on": true}}')
    assert (ok.kind, ok.request_id, ok.result) == ("reply", 7, {"was_on": True})
    bad = decode_frame(b'{"id": 8, "src": "s", "error": {"code": -105, "message": "Argument \'id\' not found"}}')
    assert bad.error == {"code": -105, "message": "Argument 'id' not found"}


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"[]", b'"x"', b'{"method": "NotifyStatus"}', b'{"src": "a", "method": "Nope"}',
     b'{"src": "a", "method": "NotifyStatus", "params": []}', b'{"src": "a", "id": true}', b'{"src": "a", "id": 1}',
     b"\xff\xfe"],
)  # fmt: skip
def test_malformed_frames_raise_parse_error(payload: bytes) -> None:
    with pytest.raises(ParseError):
        decode_frame(payload)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        decode_frame(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=15,
)
_keys = st.sampled_from(["switch:0", "pm1:1", "em:0", "emdata:0", "em1:0", "em1data:1", "sys", "odd:1", "em1:x"])


@given(
    st.dictionaries(
        _keys,
        st.dictionaries(
            st.sampled_from(
                [
                    "apower",
                    "voltage",
                    "aenergy",
                    "ret_aenergy",
                    "act_power",
                    "total_act_power",
                    "a_act_power",
                    "total_act",
                    "b_total_act_ret_energy",
                    "total_act_energy",
                    "pf",
                    "freq",
                    "output",
                ]
            ),
            _json,
            max_size=6,
        )
        | _json,
    )
)
def test_arbitrary_status_never_raises(status: dict[str, Any]) -> None:
    """Any status yields readings and issues, never an exception (bad values are issues)."""
    readings, _ = status_readings(status, MeterNaming("m", "M"), TS)
    assert all(r.ts == TS for r in readings)


# -- a full status plus its deltas equals the final full status ------------------------------------------

_leaf = st.one_of(st.floats(allow_nan=False, width=32), st.booleans(), st.text(max_size=3), st.none())
_shape = {
    "switch:0": ["output", "apower", "voltage", ("aenergy", ["total", "minute_ts"])],
    "em:0": ["a_act_power", "b_act_power", "total_act_power"],
    "sys": ["uptime", ("available_updates", ["stable"])],
}


def _status_of(draw: st.DrawFn) -> dict[str, Any]:
    def build(fields: list[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields:
            if isinstance(f, tuple):
                out[f[0]] = build(f[1])
            else:
                out[f] = draw(_leaf)
        return out

    return {key: build(fields) for key, fields in _shape.items()}


def _delta(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Only what changed, nested, as a Shelly sends it."""
    out: dict[str, Any] = {}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            sub = _delta(old[key], value)
            if sub:
                out[key] = sub
        elif old.get(key) != value or key not in old:
            out[key] = value
    return out


@st.composite
def _histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    return [_status_of(draw) for _ in range(draw(st.integers(1, 6)))]


@settings(max_examples=200)
@given(_histories())
def test_full_status_plus_deltas_equals_final_status(history: list[dict[str, Any]]) -> None:
    merged = history[0]
    for old, new in itertools.pairwise(history):
        merged = merge_status(merged, _delta(old, new))
    assert merged == history[-1]


def test_merge_is_pure() -> None:
    full = {"switch:0": {"aenergy": {"total": 1.0, "minute_ts": 1}, "apower": 5.0}}
    snapshot = json.dumps(full)
    delta = {"switch:0": {"aenergy": {"total": 2.0}}}
    assert merge_status(full, delta) == {"switch:0": {"aenergy": {"total": 2.0, "minute_ts": 1}, "apower": 5.0}}
    assert json.dumps(full) == snapshot
