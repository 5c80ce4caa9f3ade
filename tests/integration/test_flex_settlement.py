"""Issue 27's scripted household: five weeks of history, five events, and `meter-bridge flex report`.

The household is a formula (`site_w`, `heater_w`): a base load that changes every half-hour
and from day to day, and a 3 kW immersion heater on 17:00-19:00 and 23:00-01:00 local time,
switched off by flex during the events it takes part in. Readings every minute (power and
`energy_import` totals) go through the flex controller into its half-hour ledger; the events
go through the controller into its decision log; `meter-bridge flex report` settles them.

The five events (Europe/London; the clocks go back on Sunday 25 October 2026):
1. Tue 20 Oct 17:00-18:00 BST, taken part in;
2. Thu 22 Oct 17:30-18:30, declined by flex (participation off): opted out;
3. Mon 26 Oct 23:00 - Tue 27 Oct 01:00 GMT, across midnight, baseline days in summer time;
4. Wed 28 Oct 17:00-18:00, the householder opts out at 17:30 (the heater comes back on);
5. Fri 30 Oct 17:00-18:30, the site meter silent 17:29-18:01 (its 17:30 period has no data).
Also: no site readings on Wed 14 Oct 16:59-18:01 (that day is no baseline day for the 17:00
events), and the heater's meter is replaced on Mon 12 Oct at 10:00 (its total starts again at 0).

The expected values are computed here from the formula and the calendar, by the rules
docs/flex-settlement.md states, without calling the code under test; they must match the
report to 1 Wh.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from meterbridge.app import build_flex
from meterbridge.cli import main
from meterbridge.config import BridgeConfig
from meterbridge.flex.events import FlexEvent
from meterbridge.flex.policy import Direction
from meterbridge.ha_entities import EntityCatalog
from meterbridge.model import Quantity, Reading

TZ = ZoneInfo("Europe/London")
STEP = timedelta(minutes=1)
HALF = timedelta(minutes=30)
HEATER_W = 3000.0
TARGET_W = 3000.0
X, Y, N, WINDOW, CAP = 5, 10, 10, 6, 0.2


def local(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=TZ).astimezone(UTC)


START, END = local(10, 1), local(11, 3)


@dataclass(frozen=True)
class ScriptedEvent:
    event_id: str
    start: datetime
    end: datetime
    declined: bool = False
    opt_out: datetime | None = None

    @property
    def heater_off_until(self) -> datetime | None:
        """Until when the household's heater is off (the response), None: no response."""
        if self.declined:
            return None
        return self.opt_out or self.end


EVENTS = (
    ScriptedEvent("e1-tuesday", local(10, 20, 17), local(10, 20, 18)),
    ScriptedEvent("e2-declined", local(10, 22, 17, 30), local(10, 22, 18, 30), declined=True),
    ScriptedEvent("e3-midnight", local(10, 26, 23), local(10, 27, 1)),
    ScriptedEvent("e4-opt-out", local(10, 28, 17), local(10, 28, 18), opt_out=local(10, 28, 17, 30)),
    ScriptedEvent("e5-data-gap", local(10, 30, 17), local(10, 30, 18, 30)),
)
SITE_GAPS = ((local(10, 14, 16, 59), local(10, 14, 18, 1)), (local(10, 30, 17, 29), local(10, 30, 18, 1)))
#: The site periods that have no data because of the gaps (the periods the meter was silent in whole or in part
#: beyond what the power fallback accepts).
SITE_MISSING = {local(10, 14, 17), local(10, 14, 17, 30), local(10, 30, 17, 30)}
HEATER_REPLACED = local(10, 12, 10)


def base_w(ts: datetime) -> float:
    wall = ts.astimezone(TZ)
    half_hour = wall.hour * 2 + wall.minute // 30
    return 200.0 + 20.0 * (half_hour % 7) + 15.0 * (wall.date().toordinal() % 5)


def heater_w(ts: datetime) -> float:
    wall = ts.astimezone(TZ)
    scheduled = 17 <= wall.hour < 19 or wall.hour == 23 or wall.hour == 0
    if not scheduled:
        return 0.0
    for event in EVENTS:
        off_until = event.heater_off_until
        if off_until is not None and event.start <= ts < off_until:
            return 0.0
    return HEATER_W


def power(resource: str, ts: datetime) -> float:
    return base_w(ts) + heater_w(ts) if resource == "site" else heater_w(ts)


# -- the expected values, by hand from the script -------------------------------------------


def kwh(resource: str, start: datetime) -> float | None:
    """The script's energy in the period from `start` (constant power over every half-hour)."""
    if resource == "site" and start in SITE_MISSING:
        return None
    return power(resource, start) * 0.5 / 1000


def event_periods(event: ScriptedEvent) -> list[datetime]:
    return [event.start + k * HALF for k in range(int((event.end - event.start) / HALF))]


EVENT_DAYS = {p.astimezone(TZ).date() for e in EVENTS for p in event_periods(e)}


def same_wall_time(period: datetime, event_day: date, day: date) -> datetime:
    wall = period.astimezone(TZ)
    shifted = day + (wall.date() - event_day)
    return datetime.combine(shifted, wall.time(), tzinfo=TZ).astimezone(UTC)


def candidate_days(event: ScriptedEvent, resource: str, window: int) -> list[tuple[date, list[float], list[float]]]:
    """Working days before the event day, newest first, without events, with data in every period needed."""
    event_day = event.start.astimezone(TZ).date()
    periods = event_periods(event)
    before = [event.start - k * HALF for k in range(window, 0, -1)]
    out = []
    day = event_day
    while day > START.astimezone(TZ).date():
        day -= timedelta(days=1)
        if day.weekday() >= 5 or day in EVENT_DAYS:
            continue
        values = [kwh(resource, same_wall_time(p, event_day, day)) for p in periods]
        window_values = [kwh(resource, same_wall_time(p, event_day, day)) for p in before]
        if None in values or None in window_values:
            continue
        out.append((day, [v or 0.0 for v in values], [v or 0.0 for v in window_values]))
    return out


def expected_baselines(event: ScriptedEvent, resource: str) -> dict[str, list[float] | None]:
    periods = event_periods(event)
    days = candidate_days(event, resource, 0)[:N]
    previous = [sum(d[1][i] for d in days) / N for i in range(len(periods))] if len(days) == N else None
    last_y = candidate_days(event, resource, WINDOW)[:Y]
    ranked = sorted(range(len(last_y)), key=lambda i: (-sum(last_y[i][1]), i))[:X]
    chosen = [last_y[i] for i in ranked]
    unadjusted = [sum(d[1][i] for d in chosen) / X for i in range(len(periods))]
    before = [kwh(resource, event.start - k * HALF) for k in range(WINDOW, 0, -1)]
    actual_window = sum(v or 0.0 for v in before) / WINDOW
    typical_window = sum(sum(d[2]) for d in chosen) / (X * WINDOW)
    adjustment = actual_window - typical_window
    limit = CAP * sum(unadjusted) / len(unadjusted)
    adjustment = max(-limit, min(limit, adjustment))
    high = [max(0.0, u + adjustment) for u in unadjusted]
    snap = max(0.0, power(resource, event.start - STEP)) * 0.5 / 1000
    return {"previous_days": previous, "high_x_of_y": high, "snapshot": [snap] * len(periods)}


def expected_delivered(event: ScriptedEvent, resource: str, baseline: list[float] | None) -> tuple[float, float]:
    """(counted delivered kWh, delivered kWh over every period with data)."""
    if baseline is None:
        return 0.0, math.nan
    counted = measured = 0.0
    for i, start in enumerate(event_periods(event)):
        actual = kwh(resource, start)
        if actual is None:
            continue
        delivered = baseline[i] - actual
        measured += delivered
        participating = not event.declined and (event.opt_out is None or event.opt_out >= start + HALF)
        if participating:
            counted += delivered
    return counted, measured


# -- running the household through the bridge -------------------------------------------------


def config_data(tmp: Path) -> dict[str, Any]:
    return {
        "site": {"id": "scripted"},
        "mqtt": {"host": "127.0.0.1", "username": "bridge", "password": "unused"},
        "flex": {
            "enabled": True,
            "site_meter_id": "grid",
            "assets": [
                {
                    "id": "immersion",
                    "actuator": {"type": "mqtt", "command_topic": "x/immersion/set"},
                    "rated_power_w": HEATER_W,
                    "meter_id": "immersion_meter",
                }
            ],
            "state_path": str(tmp / "flex-state.json"),
            "log_path": str(tmp / "flex-events.jsonl"),
            "settlement": {
                "ledger_path": str(tmp / "flex-ledger.jsonl"),
                "report_dir": str(tmp / "reports"),
                "timezone": "Europe/London",
                "days": N,
                "high_x": X,
                "high_y": Y,
                "adjustment_periods": WINDOW,
                "adjustment_cap": CAP,
            },
        },
    }


def readings_of_day(day_start: datetime, totals: dict[str, float]) -> list[Reading]:
    out: list[Reading] = []
    ts = day_start
    while ts < min(day_start + timedelta(days=1), END):
        if ts == HEATER_REPLACED:
            totals["immersion_meter"] = 0.0
        silent = any(a <= ts < b for a, b in SITE_GAPS)
        for meter, resource in (("grid", "site"), ("immersion_meter", "immersion")):
            watts = power(resource, ts)
            if not (meter == "grid" and silent):
                out.append(Reading.of(meter, Quantity.POWER, watts, ts))
                out.append(Reading.of(meter, Quantity.ENERGY_IMPORT, totals[meter], ts))
            totals[meter] += watts * STEP.total_seconds() / 3_600_000
        ts += STEP
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Run the month through the controller, then `meter-bridge flex report`; the JSON per event."""
    import asyncio

    tmp = tmp_path_factory.mktemp("household")
    data = config_data(tmp)
    config = BridgeConfig.model_validate(data)
    now = [START]
    controller = build_flex(config.mqtt_context, config.flex, EntityCatalog(), clock=lambda: now[0])
    totals = {"grid": 0.0, "immersion_meter": 0.0}

    async def run() -> None:
        day = START
        while day < END:
            for event in EVENTS:
                if day <= event.start - timedelta(hours=1) < day + timedelta(days=1):
                    now[0] = event.start - timedelta(hours=1)
                    controller.settings.participation = not event.declined
                    flex_event = FlexEvent(
                        event.event_id, "mqtt", Direction.DOWN, event.start, event.end, TARGET_W, None
                    )
                    assert controller.submit_event(flex_event) is not event.declined
                    controller.settings.participation = True
                if event.opt_out is not None and day <= event.opt_out < day + timedelta(days=1):
                    now[0] = event.opt_out
                    opted = await controller.opt_out()
                    assert opted is not None
                    assert opted.event_id == event.event_id
            await controller.handle(readings_of_day(day, totals))
            controller.write_ledger()
            day += timedelta(days=1)
        controller.write_ledger(final=True)

    asyncio.run(run())
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(["flex", "report", "--config", str(config_path)]) == 0
    out = tmp / "reports"
    files = sorted(out.iterdir())
    assert [f.name for f in files] == sorted(
        f"scripted-{e.event_id}.{suffix}" for e in EVENTS for suffix in ("csv", "json")
    )
    reports = {e.event_id: json.loads((out / f"scripted-{e.event_id}.json").read_text()) for e in EVENTS}
    # the CSV carries the same totals as the JSON
    for event in EVENTS:
        with (out / f"scripted-{event.event_id}.csv").open(encoding="utf-8") as file:
            totals_csv = {
                (row["resource"], row["method"]): float(row["delivered_kwh"])
                for row in csv.DictReader(file)
                if row["period_start"] == "total"
            }
        for delivery in reports[event.event_id]["deliveries"]:
            assert totals_csv[delivery["resource"], delivery["method"]] == pytest.approx(delivery["delivered_kwh"])
    return reports


def delivery(report: dict[str, Any], resource: str, method: str) -> dict[str, Any]:
    return next(d for d in report["deliveries"] if d["resource"] == resource and d["method"] == method)


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.event_id)
@pytest.mark.parametrize("resource", ["site", "immersion"])
def test_each_method_delivers_what_the_script_says(
    report: dict[str, dict[str, Any]], event: ScriptedEvent, resource: str
) -> None:
    expected = expected_baselines(event, resource)
    for method, baseline in expected.items():
        got = delivery(report[event.event_id], resource, method)
        assert baseline is not None, f"{event.event_id} {method}: the script has enough history"
        assert got["note"] in ("", "adjustment capped at 20%"), got["note"]
        counted, measured = expected_delivered(event, resource, baseline)
        assert got["delivered_kwh"] == pytest.approx(counted, abs=0.001), (event.event_id, resource, method)
        assert got["measured_kwh"] == pytest.approx(measured, abs=0.001), (event.event_id, resource, method)
        for period, value in zip(got["periods"], baseline, strict=True):
            assert period["baseline_kwh"] == pytest.approx(value, abs=0.001), (event.event_id, method, period)


def test_statuses_opt_outs_and_the_gap(report: dict[str, dict[str, Any]]) -> None:
    assert {k: r["status"] for k, r in report.items()} == {
        "e1-tuesday": "delivered",
        "e2-declined": "opted_out",
        "e3-midnight": "delivered",
        "e4-opt-out": "partial_opt_out",
        "e5-data-gap": "delivered",
    }
    assert report["e4-opt-out"]["opted_out_at"] == local(10, 28, 17, 30).isoformat()
    assert [r["complete"] for r in report.values()] == [True, True, True, True, False]
    assert report["e5-data-gap"]["missing_periods"] == [local(10, 30, 17, 30).isoformat()]
    gap = delivery(report["e5-data-gap"], "site", "previous_days")["periods"]
    assert [(p["counted"], p["note"]) for p in gap] == [(True, ""), (False, "missing data"), (True, "")]
    declined = delivery(report["e2-declined"], "site", "previous_days")
    assert declined["delivered_kwh"] == 0
    assert {p["note"] for p in declined["periods"]} == {"opted out"}
    # the heater was on in the declined event: the home delivered nothing measurable either
    assert delivery(report["e2-declined"], "immersion", "previous_days")["measured_kwh"] == pytest.approx(0, abs=1e-3)


def test_share_of_requested(report: dict[str, dict[str, Any]]) -> None:
    first = delivery(report["e1-tuesday"], "site", "previous_days")
    assert first["requested_kwh"] == pytest.approx(3.0)
    assert first["share_of_requested"] == pytest.approx(first["delivered_kwh"] / 3.0, abs=1e-6)
    assert delivery(report["e1-tuesday"], "immersion", "previous_days")["share_of_requested"] is None


def test_the_baseline_days_skip_events_weekends_and_the_gap(report: dict[str, dict[str, Any]]) -> None:
    days = delivery(report["e1-tuesday"], "site", "previous_days")["baseline_days"]
    # 20 Oct's ten working days: not 14 Oct (no site data 17:00-18:00), not weekends
    assert days == [
        d.isoformat()
        for d in (
            date(2026, 10, 19),
            date(2026, 10, 16),
            date(2026, 10, 15),
            date(2026, 10, 13),
            date(2026, 10, 12),
            date(2026, 10, 9),
            date(2026, 10, 8),
            date(2026, 10, 7),
            date(2026, 10, 6),
            date(2026, 10, 5),
        )
    ]
    # the heater meter has data on 14 Oct
    assert "2026-10-14" in delivery(report["e1-tuesday"], "immersion", "previous_days")["baseline_days"]
    # the midnight event after the clocks went back: summer-time days at the same wall-clock time
    midnight = delivery(report["e3-midnight"], "immersion", "previous_days")
    assert midnight["delivered_kwh"] == pytest.approx(4 * 1.5, abs=1e-3)
