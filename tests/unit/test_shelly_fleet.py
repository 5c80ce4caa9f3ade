"""The pure parts of the Shelly fleet commands: mDNS records, address ranges, update answers,
flex holds, debug-log durations, the sanity check after an update."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from meterbridge.config import BridgeConfig
from meterbridge.errors import ConfigError, ParseError
from meterbridge.sources.shelly.debuglog import device_to_prefix, parse_duration
from meterbridge.sources.shelly.fleet import Candidate, parse_mdns_service, parse_range
from meterbridge.sources.shelly.update import (
    flex_relay_prefixes,
    held_prefixes,
    offered_version,
    sane_readings,
)

# What python-zeroconf's ServiceInfo gives for a Gen2+ device's `_shelly._tcp` record (instance
# name = device id, TXT gen/app/ver as bytes; shape from Shelly's Gen2 docs and aioshelly).
RECORDED = {
    "name": "shellyplus1pm-a8032ab12345._shelly._tcp.local.",
    "addresses": ["192.168.1.41"],
    "port": 80,
    "properties": {b"gen": b"2", b"app": b"Plus1PM", b"ver": b"1.3.3"},
}


def test_mdns_record_of_a_gen2_device() -> None:
    candidate = parse_mdns_service(**RECORDED)  # type: ignore[arg-type]
    assert candidate == Candidate("192.168.1.41", "mdns", "shellyplus1pm-a8032ab12345")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"port": 8080}, "192.168.1.41:8080"),
        ({"addresses": ["fe80::1", "192.168.1.41"]}, "192.168.1.41"),
        ({"addresses": ["fe80::1"]}, None),
        ({"properties": {b"gen": b"1"}}, None),
        ({"properties": {}}, None),
        ({"properties": {b"gen": b"x"}}, None),
        ({"properties": {b"gen": None}}, None),
        ({"port": None}, None),
    ],
)
def test_mdns_records_that_are_not_usable(change: dict[str, Any], expected: str | None) -> None:
    candidate = parse_mdns_service(**{**RECORDED, **change})
    assert (candidate.host if candidate else None) == expected


def test_ranges() -> None:
    assert parse_range("192.168.1.0/30") == ["192.168.1.1", "192.168.1.2"]
    assert parse_range("10.0.0.254-10.0.1.1") == ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"]
    assert parse_range("10.0.0.7") == ["10.0.0.7"]
    assert len(parse_range("192.168.0.0/20")) == 4094
    for bad in ("10.0.0.0/8", "10.0.0.9-10.0.0.1", "printer", "10.0.0.1-10.1.0.0"):
        with pytest.raises(ConfigError, match="--range"):
            parse_range(bad)


def test_offered_version() -> None:
    answer = {"stable": {"version": "1.4.4", "build_id": "20241011-114455/1.4.4-g6d2a586"}}
    assert offered_version(answer, "stable") == "1.4.4"
    assert offered_version(answer, "beta") is None
    assert offered_version({}, "stable") is None
    with pytest.raises(ParseError):
        offered_version([], "stable")
    with pytest.raises(ParseError):
        offered_version({"stable": {"build_id": "x"}}, "stable")


def test_flex_holds_from_config_and_state_document(tmp_path: Path) -> None:
    config = BridgeConfig.model_validate(
        {
            "site": {"id": "home"},
            "mqtt": {"host": "localhost", "username": "u", "password": "p"},
            "flex": {
                "assets": [
                    {"id": "immersion", "rated_power_w": 3000,
                     "actuator": {"type": "shelly", "prefix": "shelly/shellyplus1pm-a8032ab12345"}},
                    {"id": "ev", "rated_power_w": 7000,
                     "actuator": {"type": "mqtt", "command_topic": "ev/set", "state_topic": "ev/state"}},
                ]
            },
        }
    )  # fmt: skip
    assets = flex_relay_prefixes(config)
    assert assets == {"immersion": "shelly/shellyplus1pm-a8032ab12345"}
    # the shape flex publishes on <base>/flex/state (FlexController.state_document)
    state = {"event_active": "ON", "assets": {"immersion": {"allowed": "ON", "state": "shed", "power_w": None}}}
    assert held_prefixes(assets, state) == {"shelly/shellyplus1pm-a8032ab12345"}
    state["assets"]["immersion"]["state"] = "normal"  # type: ignore[index]
    assert held_prefixes(assets, state) == set()
    assert held_prefixes(assets, None) == set()
    assert held_prefixes(assets, json.loads('{"assets": "garbage"}')) == set()


def test_durations_and_devices() -> None:
    assert parse_duration("10m") == 600
    assert parse_duration("90") == 90
    assert parse_duration("1.5h") == 5400
    for bad in ("0s", "-1m", "ten minutes", ""):
        with pytest.raises(ConfigError):
            parse_duration(bad)
    assert device_to_prefix("shellypro3em-0cb815fc11f8") == "shelly/shellypro3em-0cb815fc11f8"
    assert device_to_prefix("shelly/shellypro3em-0cb815fc11f8") == "shelly/shellypro3em-0cb815fc11f8"
    with pytest.raises(ConfigError):
        device_to_prefix("shelly/../bridge")


def test_sane_readings_after_an_update() -> None:
    status = {"switch:0": {"id": 0, "output": True, "apower": 12.5, "voltage": 230.1, "aenergy": {"total": 10.0}}}
    assert sane_readings(status) is None
    assert sane_readings({}) == "no readings after the update"
    assert sane_readings(None) is not None
    assert sane_readings({"switch:0": {"id": 0, "apower": "NaN?"}}) is not None
