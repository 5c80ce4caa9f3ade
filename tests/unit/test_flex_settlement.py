"""Settlement per event (issue 27): every awkward case gives a defined result, never a crash."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from meterbridge.flex.baseline import HALF_HOUR, BaselineRules
from meterbridge.flex.events import FlexEvent
from meterbridge.flex.policy import Direction
from meterbridge.flex.report import read_event_log
from meterbridge.flex.settlement import (
    CANCELLED,
    DELIVERED,
    OPTED_OUT,
    PARTIAL_OPT_OUT,
    SITE,
    ResourceHistory,
    SettlementEvent,
    csv_rows,
    delivery_points,
    event_days,
    settle,
)

UTC_ZONE = ZoneInfo("UTC")
RULES = BaselineRules(days=2, x=2, y=2, adjustment_periods=0)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def flat_history(kwh: float = 1.0, event_day: int = 26, event_kwh: float = 0.25) -> ResourceHistory:
    """1 kWh in every half-hour of 16-26 Nov, `event_kwh` on the event day from 17:00."""
    series: dict[datetime, float] = {}
    t = at(16, 0)
    while t < at(27, 0):
        series[t] = event_kwh if t.day == event_day and t.hour >= 17 else kwh
        t += HALF_HOUR
    return ResourceHistory(series)


EVENT_START, EVENT_END = at(26, 17), at(26, 18)


def event(
    event_id: str = "e", start: datetime = EVENT_START, end: datetime = EVENT_END, **kw: object
) -> SettlementEvent:
    return SettlementEvent(event_id, start, end, Direction.DOWN, 1000.0, **kw)  # type: ignore[arg-type]


def test_a_plain_event() -> None:
    delivery = settle(event(), {SITE: flat_history()}, UTC_ZONE, set(), RULES)
    site = delivery.get(SITE, "previous_days")
    assert site is not None
    assert delivery.status == DELIVERED
    assert [p.delivered_kwh for p in site.periods] == [0.75, 0.75]
    assert site.delivered_kwh == 1.5
    assert site.share == 1.5  # 1 kW for an hour was asked: 150 %


def test_an_up_event_delivers_the_increase() -> None:
    up = SettlementEvent("up", at(26, 17), at(26, 18), Direction.UP, None)
    delivery = settle(up, {SITE: flat_history(event_kwh=1.5)}, UTC_ZONE, set(), RULES)
    site = delivery.get(SITE, "previous_days")
    assert site is not None
    assert site.delivered_kwh == 1.0
    assert site.share is None  # nothing was asked in W: no share


def test_opt_out_before_the_start_counts_nothing() -> None:
    delivery = settle(event(opted_out_at=at(26, 16)), {SITE: flat_history()}, UTC_ZONE, set(), RULES)
    site = delivery.get(SITE, "previous_days")
    assert site is not None
    assert delivery.status == OPTED_OUT
    assert site.delivered_kwh == 0
    assert site.measured_kwh == 1.5


def test_opt_out_inside_a_period_stops_counting_from_that_period() -> None:
    delivery = settle(event(opted_out_at=at(26, 17, 40)), {SITE: flat_history()}, UTC_ZONE, set(), RULES)
    site = delivery.get(SITE, "previous_days")
    assert site is not None
    assert delivery.status == PARTIAL_OPT_OUT
    assert [(p.counted, p.note) for p in site.periods] == [(True, ""), (False, "opted out")]
    assert site.delivered_kwh == 0.75


def test_a_cancelled_event_is_listed_not_settled() -> None:
    delivery = settle(event(cancelled=True), {SITE: flat_history()}, UTC_ZONE, set(), RULES)
    assert delivery.status == CANCELLED
    assert delivery.resources == ()
    assert csv_rows(delivery) == []
    assert delivery_points(delivery, "home") == []


def test_an_event_off_the_boundaries_is_widened() -> None:
    delivery = settle(event(start=at(26, 17, 10), end=at(26, 17, 50)), {SITE: flat_history()}, UTC_ZONE, set(), RULES)
    assert delivery.periods == (at(26, 17), at(26, 17, 30))


def test_overlapping_events_name_each_other_and_are_settled_apart() -> None:
    first, second = event("a", at(26, 17), at(26, 18)), event("b", at(26, 17, 30), at(26, 18, 30))
    days = event_days([first, second], UTC_ZONE, RULES)
    history = {SITE: flat_history()}
    one = settle(first, history, UTC_ZONE, days, RULES, [first, second])
    two = settle(second, history, UTC_ZONE, days, RULES, [first, second])
    assert (one.overlaps, two.overlaps) == (("b",), ("a",))
    assert one.periods[1] == two.periods[0]  # the shared period is in both: never add them up


def test_an_event_day_is_no_baseline_day() -> None:
    history = {SITE: flat_history()}
    excluded = {date(2026, 11, 25)}
    site = settle(event(), history, UTC_ZONE, excluded, RULES).get(SITE, "previous_days")
    assert site is not None
    assert site.baseline.days == (date(2026, 11, 24), date(2026, 11, 23))


def test_no_history_says_so_and_delivers_nothing() -> None:
    delivery = settle(event(), {SITE: ResourceHistory({at(26, 17): 0.1, at(26, 17, 30): 0.1})}, UTC_ZONE, set(), RULES)
    for resource in delivery.resources:
        assert resource.delivered_kwh == 0
        assert resource.measured_kwh is None
        assert resource.baseline.note in ("insufficient history: 0 of 2 days", "no reading at the event start")
        assert {p.note for p in resource.periods} == {"no baseline"}


@settings(max_examples=60, deadline=None)
@given(
    holes=st.sets(st.integers(min_value=0, max_value=11 * 48 - 1), max_size=200),
    opt_out=st.none() | st.integers(min_value=-60, max_value=120),
)
def test_any_gaps_and_opt_outs_give_defined_numbers(holes: set[int], opt_out: int | None) -> None:
    """Whatever is missing: no exception, counted periods have numbers, the totals are their sums."""
    series = dict(flat_history().kwh)
    starts = sorted(series)
    for hole in holes:
        series.pop(starts[hole], None)
    out_at = None if opt_out is None else at(26, 17) + timedelta(minutes=opt_out)
    delivery = settle(event(opted_out_at=out_at), {SITE: ResourceHistory(series)}, UTC_ZONE, set(), RULES)
    for resource in delivery.resources:
        counted = [p for p in resource.periods if p.counted]
        assert all(p.delivered_kwh is not None and math.isfinite(p.delivered_kwh) for p in counted)
        assert math.isclose(resource.delivered_kwh, math.fsum(p.delivered_kwh or 0.0 for p in counted))
        assert all(p.note for p in resource.periods if not p.counted)
    assert set(delivery.missing_periods) == {p for p in delivery.periods if p not in series}


def test_the_decision_log_gives_events_opt_outs_and_names_damage(tmp_path: Path) -> None:
    first = FlexEvent("a", "mqtt", Direction.DOWN, at(26, 17), at(26, 18), None, 2)
    moved = FlexEvent("a", "mqtt", Direction.DOWN, at(26, 17, 30), at(26, 18, 30), None, 2, modification=1)
    declined = FlexEvent("b", "openadr", Direction.DOWN, at(27, 17), at(27, 18), 500.0, None)
    gone = FlexEvent("c", "mqtt", Direction.DOWN, at(28, 17), at(28, 18), 500.0, None)
    lines = [
        {"ts": at(26, 9).isoformat(), "kind": "opt_in", "event": first.to_json(), "requested_w": 2000.0},
        {"ts": at(26, 10).isoformat(), "kind": "opt_in", "event": moved.to_json(), "requested_w": 2000.0},
        {"ts": at(26, 17, 45).isoformat(), "kind": "opt_out", "event_id": "a", "reason": "householder opted out"},
        {"ts": at(26, 17, 50).isoformat(), "kind": "opt_out", "event_id": "a", "reason": "householder opted out"},
        {"ts": at(27, 9).isoformat(), "kind": "opt_out", "event": declined.to_json(), "reason": "participation off"},
        {"ts": at(28, 9).isoformat(), "kind": "opt_in", "event": gone.to_json()},
        {"ts": at(28, 10).isoformat(), "kind": "event_cancelled", "event_id": "c"},
        {"ts": at(28, 11).isoformat(), "kind": "switch", "asset_id": "x"},
    ]
    path = tmp_path / "log.jsonl"
    text = "\n".join(json.dumps(line) for line in lines)
    path.write_text(text + '\n{"kind": "opt_in", "event": {}}\nnot json\n', encoding="utf-8")
    log = read_event_log(path)
    assert [(e.event_id, e.start, e.accepted, e.cancelled, e.opted_out_at, e.requested_w) for e in log.events] == [
        ("a", at(26, 17, 30), True, False, at(26, 17, 45), 2000.0),
        ("b", at(27, 17), False, False, None, 500.0),
        ("c", at(28, 17), True, True, None, 500.0),
    ]
    assert [p.split(": ")[0] for p in log.problems] == [f"{path}:9", f"{path}:10"]
    assert read_event_log(tmp_path / "missing.jsonl").events == []


def test_delivery_points_encode_as_influxdb_client_would() -> None:
    """`flex_delivery` lines are what influxdb-client's `Point` makes of the same data."""
    from influxdb_client import Point as ClientPoint
    from influxdb_client.domain.write_precision import WritePrecision

    from meterbridge.sinks.influx.lineprotocol import encode_point

    delivery = settle(event(opted_out_at=at(26, 17, 40)), {SITE: flat_history()}, UTC_ZONE, set(), RULES)
    points = delivery_points(delivery, "home one")
    assert len(points) == 3 * (2 + 1)  # three methods: two periods and a total each
    for point in points:
        client = ClientPoint(point.measurement).time(point.ts, WritePrecision.MS)
        for key, value in point.tags:
            client = client.tag(key, value)
        for key, value in point.fields:
            client = client.field(key, value)
        line = encode_point(point)
        assert line is not None
        assert line.text == client.to_line_protocol()
