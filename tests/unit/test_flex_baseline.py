"""Baselines and energy per period (issue 27): hand-computed examples and hypothesis properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterbridge.flex.baseline import (
    HALF_HOUR,
    BaselineRules,
    EnergyRules,
    PeriodRecord,
    high_x_of_y,
    period_energies,
    periods_between,
    previous_days,
    snapshot,
    snapshot_power,
)
from meterbridge.flex.ledger import PeriodAccumulator, decode_record, encode_record, read_ledger
from meterbridge.model import Quantity, Reading

UTC_ZONE = ZoneInfo("UTC")
LONDON = ZoneInfo("Europe/London")


def at(day: int, hour: int, minute: int = 0, second: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


def rec(
    start: datetime, first: tuple[datetime, float] | None, last: tuple[datetime, float] | None, **kw: object
) -> PeriodRecord:
    return PeriodRecord(
        "m",
        start,
        None if first is None else first[0],
        None if first is None else first[1],
        None if last is None else last[0],
        None if last is None else last[1],
        **kw,  # type: ignore[arg-type]
    )


# -- energy per period ----------------------------------------------------------------------


def test_totals_give_the_difference_of_interpolated_boundaries() -> None:
    records = [
        rec(at(2, 10), (at(2, 10, 0, 30), 100.005), (at(2, 10, 29, 30), 100.295)),
        rec(at(2, 10, 30), (at(2, 10, 30, 30), 100.305), (at(2, 10, 59, 0), 100.59)),
        rec(at(2, 11), (at(2, 11, 1, 0), 100.61), (at(2, 11, 29), 100.89)),
    ]
    energies = period_energies(records)
    # 10:30 boundary: halfway between 100.295 and 100.305 = 100.300; 11:00: 100.59 + 0.02/2 = 100.600
    assert energies[at(2, 10, 30)].kwh == pytest.approx(0.300, abs=1e-9)
    assert energies[at(2, 10, 30)].source == "totals"
    # no record before 10:00 and none after 11:30: those periods have no trustworthy value
    assert at(2, 10) not in energies
    assert at(2, 11) not in energies


def test_a_replaced_meter_breaks_the_series_and_power_fills_in() -> None:
    covered = {"power_wh": 290.0, "power_s": 1800.0}
    records = [
        rec(at(2, 10), (at(2, 10), 100.0), (at(2, 10, 29, 50), 100.29)),
        rec(at(2, 10, 30), (at(2, 10, 30), 100.3), (at(2, 10, 59, 50), 100.59), **covered),
        # the new meter starts at 5 kWh
        rec(at(2, 11), (at(2, 11), 5.0), (at(2, 11, 29, 50), 5.29)),
        rec(at(2, 11, 30), (at(2, 11, 30), 5.3), (at(2, 11, 59, 50), 5.59)),
        rec(at(2, 12), (at(2, 12), 5.6), None),
    ]
    energies = period_energies(records)
    assert energies[at(2, 10, 30)].kwh == pytest.approx(0.290)  # from power: no total at 11:00
    assert energies[at(2, 10, 30)].source == "power"
    assert at(2, 11) not in energies  # no total at 11:00, no power
    assert energies[at(2, 11, 30)].kwh == pytest.approx(0.3)


def test_a_total_jump_no_load_could_make_is_a_break() -> None:
    records = [
        rec(at(2, 10), (at(2, 10), 1.0), (at(2, 10, 29, 59), 1.5)),
        rec(at(2, 10, 30), (at(2, 10, 30), 1.5), (at(2, 10, 59, 59), 2.0)),
        rec(at(2, 11), (at(2, 11), 900.0), (at(2, 11, 29, 59), 900.5)),  # +898 kWh in 1 s
        rec(at(2, 11, 30), (at(2, 11, 30), 900.5), None),
    ]
    energies = period_energies(records)
    # neither period touching the 11:00 boundary has a value: the jump is not energy used
    assert at(2, 10, 30) not in energies
    assert at(2, 11) not in energies


def test_power_fallback_needs_coverage_and_scales_to_the_period() -> None:
    enough = rec(at(2, 10), None, None, power_wh=283.3, power_s=1700.0)
    short = rec(at(2, 10, 30), None, None, power_wh=100.0, power_s=1500.0)  # 83 % < 90 %
    energies = period_energies([enough, short])
    assert energies[at(2, 10)].kwh == pytest.approx(0.2833 * 1800 / 1700)
    assert at(2, 10, 30) not in energies


def test_a_period_written_twice_is_merged() -> None:
    first_half = rec(at(2, 10, 30), (at(2, 10, 30), 2.0), (at(2, 10, 44), 2.14), power_wh=140.0, power_s=840.0)
    second_half = rec(at(2, 10, 30), (at(2, 10, 45), 2.15), (at(2, 10, 59, 59), 2.2999), power_wh=150.0, power_s=900.0)
    merged = first_half.merge(second_half)
    assert (merged.first_kwh, merged.last_kwh, merged.power_wh, merged.power_s) == (2.0, 2.2999, 290.0, 1740.0)
    assert not merged.broken
    assert first_half.merge(
        rec(at(2, 10, 30), (at(2, 10, 50), 1.0), (at(2, 10, 55), 1.1))
    ).broken  # lower later: a reset


# -- the accumulator and the file --------------------------------------------------------------


def feed(acc: PeriodAccumulator, readings: list[Reading]) -> list[PeriodRecord]:
    out: list[PeriodRecord] = []
    for reading in readings:
        out += acc.feed(reading)
    return out + acc.flush()


@settings(max_examples=40, deadline=None)
@given(
    watts=st.floats(min_value=0, max_value=9000),
    step_s=st.integers(min_value=1, max_value=120),
    offset_s=st.integers(min_value=0, max_value=119),
)
def test_constant_load_gives_its_energy_from_totals_and_from_power(watts: float, step_s: int, offset_s: int) -> None:
    """Whatever the reading interval and phase, a full period holds watts x 0.5 h (totals and power agree)."""
    t0 = at(2, 9) + timedelta(seconds=offset_s)
    readings: list[Reading] = []
    for k in range(0, 3 * 3600 // step_s):
        ts = t0 + timedelta(seconds=k * step_s)
        readings.append(Reading.of("m", Quantity.POWER, watts, ts))
        readings.append(Reading.of("m", Quantity.ENERGY_IMPORT, 50 + watts * k * step_s / 3_600_000, ts))
    acc = PeriodAccumulator(frozenset({"m"}))
    records = feed(acc, readings)
    energies = period_energies(records)
    for start in (at(2, 10), at(2, 10, 30), at(2, 11)):
        assert energies[start].source == "totals"
        assert energies[start].kwh == pytest.approx(watts / 2000, abs=1e-9)
    only_power = [PeriodRecord(r.meter_id, r.start, power_wh=r.power_wh, power_s=r.power_s) for r in records]
    for start, energy in period_energies(only_power).items():
        if at(2, 9, 30) <= start <= at(2, 11):
            assert energy.kwh == pytest.approx(watts / 2000, abs=1e-9)


def test_accumulator_marks_a_reset_and_ignores_late_readings() -> None:
    acc = PeriodAccumulator(frozenset({"m"}))
    readings = [
        Reading.of("m", Quantity.ENERGY_IMPORT, 10.0, at(2, 10, 1)),
        Reading.of("m", Quantity.ENERGY_IMPORT, 10.1, at(2, 10, 10)),
        Reading.of("m", Quantity.ENERGY_IMPORT, 0.2, at(2, 10, 20)),  # replaced
        Reading.of("m", Quantity.ENERGY_IMPORT, 0.3, at(2, 10, 31)),
        Reading.of("m", Quantity.ENERGY_IMPORT, 0.25, at(2, 10, 29)),  # clock stepped back: late
        Reading.of("other", Quantity.ENERGY_IMPORT, 1.0, at(2, 10, 32)),
    ]
    records = feed(acc, readings)
    assert [(r.start, r.broken, r.first_kwh, r.last_kwh) for r in records] == [
        (at(2, 10), True, 10.0, 0.2),
        (at(2, 10, 30), False, 0.3, 0.3),
    ]
    assert acc.late_readings == 1


def test_ledger_lines_round_trip_and_damage_is_named(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    record = rec(at(2, 10), (at(2, 10, 0, 1), 1.5), (at(2, 10, 29, 59), 1.75), power_wh=250.0, power_s=1790.0)
    assert decode_record(encode_record(record)) == record
    path = tmp_path / "ledger.jsonl"
    path.write_text(encode_record(record) + "\n{not json\n" + '{"m": "m", "p": "nan"}\n', encoding="utf-8")
    contents = read_ledger(path)
    assert contents.records == {"m": [record]}
    assert [p.split(": ")[0] for p in contents.problems] == [f"{path}:2", f"{path}:3"]


# -- baselines ----------------------------------------------------------------------------------


def daily(
    values: dict[date, list[float]], hour: int, zone: ZoneInfo = UTC_ZONE, minute: int = 0
) -> dict[datetime, float]:
    """kWh per period: values[day][i] is the i-th half-hour from `hour` local on `day`."""
    out: dict[datetime, float] = {}
    for day, kwhs in values.items():
        for i, kwh in enumerate(kwhs):
            local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone) + i * HALF_HOUR
            out[local.astimezone(UTC)] = kwh
    return out


# Thursday 26 November 2026; working days before it: 25, 24, 23, 20, 19, 18, 17, 16, 13, 12, 11 ...
EVENT_DAY = date(2026, 11, 26)


def working_days_before(day: date, count: int) -> list[date]:
    out: list[date] = []
    while len(out) < count:
        day -= timedelta(days=1)
        if day.weekday() < 5:
            out.append(day)
    return out


def test_previous_days_averages_the_same_periods_of_working_days_without_events() -> None:
    days = working_days_before(EVENT_DAY, 12)
    # day k (0 = yesterday) uses k/10 kWh in the 17:00 period and k/10 + 1 in the 17:30 one
    series = daily({d: [k / 10, k / 10 + 1] for k, d in enumerate(days)}, 17)
    series |= daily({date(2026, 11, 22): [9.0, 9.0], date(2026, 11, 21): [9.0, 9.0]}, 17)  # a weekend: not used
    periods = periods_between(at(26, 17), at(26, 18))
    rules = BaselineRules(days=3)
    # 25 Nov had an event: left out; the three days are k = 1, 2, 3
    base = previous_days(series, periods, UTC_ZONE, excluded={date(2026, 11, 25)}, rules=rules)
    assert base.days == (days[1], days[2], days[3])
    assert base.kwh == {at(26, 17): pytest.approx(0.2), at(26, 17, 30): pytest.approx(1.2)}


def test_too_little_history_says_so() -> None:
    days = working_days_before(EVENT_DAY, 4)
    series = daily({d: [0.5, 0.5] for d in days}, 17)
    del series[datetime(2026, 11, 24, 17, 30, tzinfo=UTC)]  # a gap makes 24 Nov ineligible
    base = previous_days(series, periods_between(at(26, 17), at(26, 18)), UTC_ZONE, rules=BaselineRules(days=10))
    assert not base.ok
    assert base.note == "insufficient history: 3 of 10 days"
    high = high_x_of_y(series, periods_between(at(26, 17), at(26, 18)), UTC_ZONE, rules=BaselineRules())
    assert high.note == "insufficient history: 0 of 10 days"  # no day has the 3 h before the event


def test_weekend_events_use_weekend_days() -> None:
    saturday = date(2026, 11, 28)
    series = daily({date(2026, 11, 22): [2.0], date(2026, 11, 21): [1.0], date(2026, 11, 27): [7.0]}, 12)
    base = previous_days(series, [at(28, 12)], UTC_ZONE, rules=BaselineRules(weekend_days=2))
    assert saturday.weekday() == 5
    assert base.kwh == {at(28, 12): pytest.approx(1.5)}


def test_high_x_of_y_picks_the_highest_days_and_adjusts_from_the_hours_before() -> None:
    days = working_days_before(EVENT_DAY, 5)
    # per day: three adjustment periods (15:30-17:00) then the two event periods (17:00-18:00)
    profile = {
        days[0]: [0.2, 0.2, 0.2, 1.0, 1.0],  # event window 2.0
        days[1]: [0.3, 0.3, 0.3, 2.0, 2.0],  # 4.0  (highest)
        days[2]: [0.1, 0.1, 0.1, 0.5, 0.5],  # 1.0
        days[3]: [0.5, 0.5, 0.5, 1.5, 1.5],  # 3.0  (second)
        days[4]: [0.9, 0.9, 0.9, 0.1, 0.1],  # 0.2
        EVENT_DAY: [0.6, 0.6, 0.6],
    }
    series = daily(profile, 15, UTC_ZONE, minute=30)
    periods = periods_between(at(26, 17), at(26, 18))
    rules = BaselineRules(x=2, y=4, adjustment_periods=3, adjustment_cap=None)
    base = high_x_of_y(series, periods, UTC_ZONE, rules=rules)
    # chosen: days[1], days[3]; unadjusted 1.75 per period; window typical (0.3+0.5)/2 = 0.4, actual 0.6
    assert base.days == (days[1], days[3])
    assert base.adjustment_kwh == pytest.approx(0.2)
    assert base.kwh == {p: pytest.approx(1.95) for p in periods}
    capped = high_x_of_y(
        series, periods, UTC_ZONE, rules=BaselineRules(x=2, y=4, adjustment_periods=3, adjustment_cap=0.1)
    )
    assert capped.adjustment_kwh == pytest.approx(0.175)
    assert capped.note == "adjustment capped at 10%"
    # the event day's window incomplete: no adjustment, said so
    del series[datetime(2026, 11, 26, 16, 0, tzinfo=UTC)]
    plain = high_x_of_y(series, periods, UTC_ZONE, rules=rules)
    assert plain.adjustment_kwh is None
    assert plain.note == "adjustment unavailable: missing data before the event"
    assert plain.kwh == {p: pytest.approx(1.75) for p in periods}


def test_wall_clock_periods_across_the_autumn_change() -> None:
    """Monday 26 Oct 2026 17:00 GMT is matched with 17:00 BST (16:00 UTC) on Friday 23 Oct."""
    event = datetime(2026, 10, 26, 17, tzinfo=UTC)
    series = {datetime(2026, 10, 23, 16, tzinfo=UTC): 1.0, datetime(2026, 10, 23, 17, tzinfo=UTC): 5.0}
    base = previous_days(series, [event], LONDON, rules=BaselineRules(days=1))
    assert base.kwh == {event: 1.0}


def test_a_wall_time_the_day_does_not_have_makes_it_ineligible() -> None:
    """01:30 local does not exist on Sunday 29 Mar 2026 (spring forward): the Sunday before is used."""
    event = datetime(2026, 4, 5, 0, 30, tzinfo=UTC)  # 01:30 BST
    series = {
        datetime(2026, 3, 29, 0, 30, tzinfo=UTC): 9.0,  # 01:30 UTC... is 02:30 BST wall time: not 01:30
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC): 2.0,  # Saturday 01:30 GMT
    }
    base = previous_days(series, [event], LONDON, rules=BaselineRules(weekend_days=1))
    assert base.days == (date(2026, 3, 28),)
    assert base.kwh == {event: 2.0}


def test_an_event_across_midnight_maps_each_period_to_the_following_day() -> None:
    days = working_days_before(EVENT_DAY, 2)
    series: dict[datetime, float] = {}
    for k, d in enumerate(days):
        series[datetime(d.year, d.month, d.day, 23, 30, tzinfo=UTC)] = 1.0 + k
        nxt = d + timedelta(days=1)
        series[datetime(nxt.year, nxt.month, nxt.day, 0, 0, tzinfo=UTC)] = 10.0 + k
    periods = periods_between(at(26, 23, 30), at(27, 0, 30))
    base = previous_days(series, periods, UTC_ZONE, rules=BaselineRules(days=2))
    assert base.kwh == {periods[0]: pytest.approx(1.5), periods[1]: pytest.approx(10.5)}


def test_snapshot_holds_the_power_at_the_start() -> None:
    records = {at(2, 16, 30): rec(at(2, 16, 30), None, None, last_power_ts=at(2, 16, 59, 55), last_power_w=1500.0)}
    power = snapshot_power(records, at(2, 17), EnergyRules())
    assert power == 1500.0
    base = snapshot(power, periods_between(at(2, 17), at(2, 18)))
    assert base.kwh == {at(2, 17): 0.75, at(2, 17, 30): 0.75}
    assert snapshot_power(records, at(2, 17, 10), EnergyRules()) is None  # 10 min old: not the start
    assert snapshot(None, [at(2, 17)]).note == "no reading at the event start"


def test_an_event_over_the_autumn_change_night_uses_the_repeated_hour_twice() -> None:
    """Sun 25 Oct 2026 00:30 BST - 02:30 GMT: six periods, 01:00-02:00 local twice; the Sunday before has it once."""
    periods = periods_between(datetime(2026, 10, 24, 23, 30, tzinfo=UTC), datetime(2026, 10, 25, 2, 30, tzinfo=UTC))
    assert [p.astimezone(LONDON).strftime("%H:%M") for p in periods] == [
        "00:30",
        "01:00",
        "01:30",
        "01:00",
        "01:30",
        "02:00",
    ]
    # Sunday 18 Oct (BST all night): 00:30, 01:00, 01:30, 02:00 local are 23:30, 00:00, 00:30, 01:00 UTC
    series = {
        datetime(2026, 10, 17, 23, 30, tzinfo=UTC): 1.0,
        datetime(2026, 10, 18, 0, 0, tzinfo=UTC): 2.0,
        datetime(2026, 10, 18, 0, 30, tzinfo=UTC): 3.0,
        datetime(2026, 10, 18, 1, 0, tzinfo=UTC): 4.0,
    }
    base = previous_days(series, periods, LONDON, rules=BaselineRules(weekend_days=1))
    assert base.days == (date(2026, 10, 18),)
    assert base.kwh is not None
    assert [base.kwh[p] for p in periods] == [1.0, 2.0, 3.0, 2.0, 3.0, 4.0]
