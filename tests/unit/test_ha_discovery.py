"""Home Assistant discovery payloads (pinned by snapshot), state payloads and rate limiting."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from meterbridge import __version__
from meterbridge.logutil import RateLimitedLog, redact
from meterbridge.model import MeterDescription, Quantity
from meterbridge.sinks.homeassistant.discovery import (
    AVERAGED,
    ENTITY_DESCRIPTIONS,
    RECORDED_STATE_CLASSES,
    Topics,
    average_discovery_message,
    discovery_message,
    state_payload,
)
from meterbridge.sinks.homeassistant.sink import RECORDED_LEAD_S, MeterState, TimeWeightedMean, due_at, next_recorded_at

SNAPSHOTS = Path(__file__).parent.parent / "fixtures" / "homeassistant"
METER = MeterDescription(
    meter_id="grid",
    name="Grid",
    source_type="emu2",
    manufacturer="Rainforest Automation",
    model="EMU-2",
    sw_version="1.4.47",
    via="emu2_hub",
)


@pytest.mark.parametrize("quantity", list(Quantity))
def test_discovery_snapshot(quantity: Quantity) -> None:
    topic, payload = discovery_message(Topics(), "home", METER, quantity, currency="GBP")
    assert topic == f"homeassistant/sensor/hems/hems_grid_{quantity.value}/config"
    payload["origin"]["sw_version"] = "<version>"  # the snapshot must not change with every release
    snapshot = SNAPSHOTS / f"discovery_{quantity.value}.json"
    if os.environ.get("UPDATE_SNAPSHOTS"):  # UPDATE_SNAPSHOTS=1 pytest ... then review the diff
        snapshot.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    assert snapshot.exists(), f"no snapshot {snapshot.name}: run with UPDATE_SNAPSHOTS=1 and review it"
    assert payload == json.loads(snapshot.read_text())


@pytest.mark.parametrize("quantity", AVERAGED)
def test_average_discovery_snapshot(quantity: Quantity) -> None:
    topic, payload = average_discovery_message(Topics(), "home", METER, quantity)
    assert topic == f"homeassistant/sensor/hems/hems_grid_{quantity.value}_average/config"
    payload["origin"]["sw_version"] = "<version>"
    snapshot = SNAPSHOTS / f"discovery_{quantity.value}_average.json"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    assert snapshot.exists(), f"no snapshot {snapshot.name}: run with UPDATE_SNAPSHOTS=1 and review it"
    assert payload == json.loads(snapshot.read_text())


def test_totals_and_averages_read_the_recorded_topic_and_the_rest_the_live_one() -> None:
    """What HA records (ha-config/packages/hems.yaml leaves out the live power) comes once per step."""
    for quantity in Quantity:
        _, payload = discovery_message(Topics(), "home", METER, quantity)
        recorded = ENTITY_DESCRIPTIONS[quantity].state_class in RECORDED_STATE_CLASSES
        assert payload["state_topic"] == ("hems/meter/grid/recorded" if recorded else "hems/meter/grid"), quantity
    for quantity in (Quantity.ENERGY_IMPORT, Quantity.ENERGY_EXPORT, Quantity.GAS_ENERGY, Quantity.HEAT_ENERGY):
        assert ENTITY_DESCRIPTIONS[quantity].state_class in RECORDED_STATE_CLASSES
    for quantity in AVERAGED:
        _, live = discovery_message(Topics(), "home", METER, quantity)
        _, average = average_discovery_message(Topics(), "home", METER, quantity)
        assert average["state_topic"] == "hems/meter/grid/recorded"
        assert average["value_template"] == f"{{{{ value_json.{quantity.value}_average }}}}"
        assert average["default_entity_id"] == f"{live['default_entity_id']}_average"
        same = ("device_class", "state_class", "unit_of_measurement", "availability", "device")
        assert {k: average[k] for k in same} == {k: live[k] for k in same}


def test_recorded_step_lands_before_each_boundary() -> None:
    # 60 s step: 2 s before each whole minute, never twice for one boundary
    assert next_recorded_at(1_000_000.0, 60) == 1_000_020.0 - RECORDED_LEAD_S
    assert next_recorded_at(1_000_018.0, 60) == 1_000_080.0 - RECORDED_LEAD_S
    assert next_recorded_at(1_000_019.5, 60) == 1_000_080.0 - RECORDED_LEAD_S
    # every 5-minute boundary (where HA compiles statistics) gets a publication
    times, wall = [], 1_000_000.0
    for _ in range(20):
        wall = next_recorded_at(wall, 60)
        times.append(wall)
    assert [t + RECORDED_LEAD_S for t in times] == [1_000_020.0 + 60 * n for n in range(20)]
    assert {(t + RECORDED_LEAD_S) % 300 for t in times} == {0.0, 60.0, 120.0, 180.0, 240.0}


def test_time_weighted_mean() -> None:
    mean = TimeWeightedMean()
    assert mean.take(0.0) is None
    mean.add(100.0, 10.0)
    mean.add(300.0, 40.0)  # 100 W for 30 s, then 300 W
    assert mean.take(70.0) == pytest.approx((100 * 30 + 300 * 30) / 60)
    # the next window starts with the value held
    assert mean.take(80.0) == 300.0
    mean.add(0.0, 85.0)
    assert mean.take(90.0) == pytest.approx(150.0)
    assert mean.take(90.0) == 0.0  # an empty window: the value held


def test_energy_dashboard_requirements() -> None:
    for quantity in (Quantity.ENERGY_IMPORT, Quantity.ENERGY_EXPORT):
        _, payload = discovery_message(Topics(), "home", METER, quantity)
        assert payload["device_class"] == "energy"
        assert payload["state_class"] == "total_increasing"
        assert payload["unit_of_measurement"] == "kWh"
    _, power = discovery_message(Topics(), "home", METER, Quantity.POWER)
    assert (power["device_class"], power["state_class"], power["unit_of_measurement"]) == ("power", "measurement", "W")
    _, price = discovery_message(Topics(), "home", METER, Quantity.PRICE, currency="USD")
    assert price["device_class"] == "monetary"
    assert "state_class" not in price  # HA refuses state_class measurement on monetary sensors
    assert price["unit_of_measurement"] == "USD/kWh"


def test_availability_is_bridge_and_meter_and_ids_follow_the_contract() -> None:
    _, payload = discovery_message(Topics("hems", "homeassistant"), "site1", METER, Quantity.POWER)
    assert payload["availability_mode"] == "all"
    assert [a["topic"] for a in payload["availability"]] == ["hems/bridge/availability", "hems/meter/grid/availability"]
    assert payload["unique_id"] == "hems_site1_grid_power"
    assert payload["device"]["identifiers"] == ["hems_site1_grid"]
    assert payload["device"]["via_device"] == "hems_site1_emu2_hub"
    assert payload["origin"]["name"] == "meter-bridge"
    assert payload["state_topic"] == "hems/meter/grid"
    assert payload["value_template"] == "{{ value_json.power }}"
    # entity names are short: HA prefixes the device name ("Grid Power", not "Grid Grid power")
    assert all(not d.name.lower().startswith("grid") for d in ENTITY_DESCRIPTIONS.values())


def test_origin_carries_the_version() -> None:
    _, payload = discovery_message(Topics(), "home", METER, Quantity.POWER)
    assert payload["origin"]["sw_version"] == __version__


def test_state_payload() -> None:
    ts = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)
    body = json.loads(state_payload({Quantity.POWER: 512.0, Quantity.ENERGY_IMPORT: 6613.405}, ts))
    assert body == {"power": 512.0, "energy_import": 6613.405, "ts": "2026-11-21T20:00:00+00:00"}
    recorded = json.loads(
        state_payload({Quantity.POWER: 512.0, Quantity.ENERGY_IMPORT: 6613.405}, ts, {Quantity.POWER: 498.5})
    )
    assert recorded == {**body, "power_average": 498.5}


def state(**kwargs: object) -> MeterState:
    s = MeterState(METER, values={Quantity.POWER: 500.0, Quantity.ENERGY_IMPORT: 1.0})
    s.announced = {Quantity.POWER, Quantity.ENERGY_IMPORT}
    for key, value in kwargs.items():
        setattr(s, key, value)
    return s


def test_throttle() -> None:
    # nothing new: nothing to publish
    assert due_at(state(state_dirty=False), 5, 50) is None
    # never published: at once
    assert due_at(state(state_dirty=True), 5, 50) == 0.0
    # published 100 W ago at t=10: small change waits for the interval
    assert due_at(state(state_dirty=True, published_at=10.0, published_power=480.0), 5, 50) == 15.0
    # a jump beyond the deadband: at once
    assert due_at(state(state_dirty=True, published_at=10.0, published_power=100.0), 5, 50) == 0.0
    # a quantity HA has not been told about yet: at once
    s = state(state_dirty=True, published_at=10.0, published_power=500.0)
    s.values[Quantity.VOLTAGE] = 230.0
    assert due_at(s, 5, 50) == 0.0
    # rate limiting off
    assert due_at(state(state_dirty=True, published_at=10.0, published_power=500.0), 0, 50) == 0.0


def test_rate_limited_log_counts_what_it_suppresses(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("t"), period_s=300, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for _ in range(100):
            log.log(logging.WARNING, "garbled", "garbled fragment from %s", "/dev/ttyACM0")
        log.log(logging.WARNING, "other", "another kind")
        now[0] = 301.0
        log.log(logging.WARNING, "garbled", "garbled fragment from %s", "/dev/ttyACM0")
    assert caplog.messages == [
        "garbled fragment from /dev/ttyACM0",
        "another kind",
        "garbled fragment from /dev/ttyACM0 (99 more in the last 5 min)",
    ]


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("meter 00:1D:C0:12:34:56 joined", "00:1D:C0:12:34:56"),
        ("mac 0xd8d5b90000001234", "d8d5b90000001234"),
        ("mqtt://bridge:hunter2@mqtt:1883", "hunter2"),
        ('{"password": "hunter2"}', "hunter2"),
        ("token=abcdef123", "abcdef123"),
        ("Authorization: Bearer eyJhbGciOi.x.y", "eyJhbGciOi"),
    ],
)
def test_redaction(text: str, hidden: str) -> None:
    assert hidden not in redact(text)
