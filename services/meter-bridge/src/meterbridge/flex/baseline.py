"""Energy per settlement period and the baselines events are settled against (pure: no I/O).

A flexibility event is paid on the energy a home did *not* use against what it would have
used (its baseline), per settlement period (half-hours in Great Britain; `period` here).
Everything in this module works on data, so it is tested with hand-computed values
(tests/unit/test_flex_baseline.py); the ledger (`ledger.py`) records the data and the
settlement (`settlement.py`) applies the methods to events. docs/flex-settlement.md explains
each method, its source and its known biases.

Energy per period (`period_energies`), from what the ledger keeps per meter and period
(`PeriodRecord`):

- **Totals first** (exact): the meter's `energy_import` total at each period boundary,
  interpolated between the last sample before and the first at or after it (at most
  `max_gap` apart), and the period's energy is the difference of its two boundaries.
- A total that goes down, or jumps up faster than `max_power_w` could explain (a meter
  replaced or reset), breaks the series: no difference is taken across the break.
- **Power as the fallback**: the integral of import power (W >= 0) over the period, when
  readings cover at least `min_power_coverage` of it (scaled up to the whole period).
- Otherwise the period has no value: it is *missing*, never guessed.

Baselines (kWh per event period), each a `Baseline` that says which days it used, or why
there is none (`insufficient history: N of M days`):

- `previous_days`: the same wall-clock period of the previous N days of the same kind
  (working day or weekend) without events, averaged (PowerShaper style).
- `high_x_of_y`: of the last Y such days, the X with the highest energy over the event
  window, averaged, plus an in-day adjustment from the periods just before the event,
  capped (UK Demand Flexibility Service style).
- `snapshot`: the site's power at the event start, held for the whole event (the naive one
  the controller shows live; kept for comparison).

Times are timezone-aware; period starts are UTC multiples of `period` from the epoch (so
half-hours line up with local half-hours in every zone whose offset is whole half-hours).
Days and wall-clock periods are those of the household's zone (`tz`): on the days summer
time starts or ends, a period is matched by its local wall time, and a wall time the
candidate day does not have (spring forward) makes that day ineligible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

#: Settlement period of Great Britain's half-hourly settlement (and PowerShaper, DFS).
HALF_HOUR = timedelta(minutes=30)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

PREVIOUS_DAYS = "previous_days"
HIGH_X_OF_Y = "high_x_of_y"
SNAPSHOT = "snapshot"
#: Every method, in the order reports show them.
METHODS = (PREVIOUS_DAYS, HIGH_X_OF_Y, SNAPSHOT)


def period_start(ts: datetime, period: timedelta = HALF_HOUR) -> datetime:
    """The start (UTC) of the period `ts` falls in."""
    return _EPOCH + ((ts - _EPOCH) // period) * period


def periods_between(start: datetime, end: datetime, period: timedelta = HALF_HOUR) -> list[datetime]:
    """Starts of the periods overlapping [start, end) (an event off the boundaries is widened)."""
    first = period_start(start, period)
    out: list[datetime] = []
    at = first
    while at < end:
        out.append(at)
        at += period
    return out


# -- what the ledger keeps, and the energy per period ----------------------------------------


@dataclass(frozen=True, slots=True)
class PeriodRecord:
    """What was seen of one meter in one period (the ledger's row).

    Totals in kWh, power in W (import positive), `power_wh` the integral of import power
    over `power_s` seconds of the period. `broken`: the total went down or jumped inside
    the period (meter replaced or reset), so its totals cannot give the period's energy.
    """

    meter_id: str
    start: datetime
    first_ts: datetime | None = None
    first_kwh: float | None = None
    last_ts: datetime | None = None
    last_kwh: float | None = None
    power_wh: float = 0.0
    power_s: float = 0.0
    last_power_ts: datetime | None = None
    last_power_w: float | None = None
    broken: bool = False

    def merge(self, other: PeriodRecord) -> PeriodRecord:
        """One record of both (the same meter and period written twice, e.g. across a restart)."""
        first = min(
            (r for r in (self, other) if r.first_ts is not None), key=lambda r: r.first_ts or _EPOCH, default=None
        )
        last = max((r for r in (self, other) if r.last_ts is not None), key=lambda r: r.last_ts or _EPOCH, default=None)
        power = max(
            (r for r in (self, other) if r.last_power_ts is not None),
            key=lambda r: r.last_power_ts or _EPOCH,
            default=None,
        )
        return PeriodRecord(
            self.meter_id,
            self.start,
            None if first is None else first.first_ts,
            None if first is None else first.first_kwh,
            None if last is None else last.last_ts,
            None if last is None else last.last_kwh,
            self.power_wh + other.power_wh,
            self.power_s + other.power_s,
            None if power is None else power.last_power_ts,
            None if power is None else power.last_power_w,
            # the two halves may not join up: a total lower in the later half is a break too
            self.broken or other.broken or _decreases(self, other),
        )


def _decreases(a: PeriodRecord, b: PeriodRecord) -> bool:
    """Whether the totals of two halves of a period do not join up (the later lower, or overlapping)."""
    if a.first_ts is None or b.first_ts is None or a.last_ts is None or b.last_ts is None:
        return False
    early, late = (a, b) if a.first_ts <= b.first_ts else (b, a)
    early_last, late_first = early.last_ts, late.first_ts
    if early_last is None or late_first is None:
        return False
    if late_first < early_last:
        return True  # two writers of one period at once: neither can be trusted
    return (late.first_kwh or 0.0) < (early.last_kwh or 0.0)


@dataclass(frozen=True, slots=True)
class PeriodEnergy:
    """The import energy of one period (kWh) and where it came from (`totals` or `power`)."""

    kwh: float
    source: str


@dataclass(frozen=True, slots=True)
class EnergyRules:
    """How energy per period is derived from the records.

    `max_gap`: the longest time between two total samples a boundary is interpolated over.
    `max_power_w`: a total rising faster than this is a jump (a new meter), not use.
    `min_power_coverage`: the share of a period power readings must cover for the fallback.
    """

    period: timedelta = HALF_HOUR
    max_gap: timedelta = timedelta(minutes=5)
    max_power_w: float = 100_000.0
    min_power_coverage: float = 0.9


def _boundary_total(
    before: PeriodRecord | None, after: PeriodRecord | None, at: datetime, rules: EnergyRules
) -> float | None:
    """The total at `at` from the last sample before it and the first at or after it."""
    if before is None or after is None:
        return None
    if before.last_ts is None or before.last_kwh is None or after.first_ts is None or after.first_kwh is None:
        return None
    t0, v0, t1, v1 = before.last_ts, before.last_kwh, after.first_ts, after.first_kwh
    span = (t1 - t0).total_seconds()
    if span < 0 or t1 - t0 > rules.max_gap or v1 < v0:
        return None
    if span == 0:
        return v1
    if (v1 - v0) * 3_600_000 / span > rules.max_power_w:
        return None
    return v0 + (v1 - v0) * (at - t0).total_seconds() / span


def period_energies(records: Iterable[PeriodRecord], rules: EnergyRules | None = None) -> dict[datetime, PeriodEnergy]:
    """Energy per period of one meter's records (periods without a trustworthy value left out)."""
    rules = rules or EnergyRules()
    by_start: dict[datetime, PeriodRecord] = {}
    for record in records:
        known = by_start.get(record.start)
        by_start[record.start] = record if known is None else known.merge(record)
    period = rules.period
    seconds = period.total_seconds()
    out: dict[datetime, PeriodEnergy] = {}
    for start, record in by_start.items():
        end = start + period
        previous, following = by_start.get(start - period), by_start.get(end)
        begin = _boundary_total(previous, record, start, rules)
        # the end boundary: this period's last sample and the next one's first
        finish = _boundary_total(record, following, end, rules)
        if begin is not None and finish is not None and not record.broken and finish >= begin:
            out[start] = PeriodEnergy(finish - begin, "totals")
        elif record.power_s >= rules.min_power_coverage * seconds:
            out[start] = PeriodEnergy(record.power_wh / 1000 * seconds / min(record.power_s, seconds), "power")
    return out


def snapshot_power(
    records: Mapping[datetime, PeriodRecord], at: datetime, rules: EnergyRules | None = None
) -> float | None:
    """The last power reading (W) before `at`, if it is at most `max_gap` old (the controller's view)."""
    rules = rules or EnergyRules()
    start = period_start(at, rules.period)
    for candidate in (start, start - rules.period):
        record = records.get(candidate)
        if record is None or record.last_power_ts is None or record.last_power_w is None:
            continue
        if record.last_power_ts < at and at - record.last_power_ts <= rules.max_gap:
            return record.last_power_w
    return None


# -- baselines --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BaselineRules:
    """Settings of the baseline methods (docs/flex-settlement.md).

    `days`/`weekend_days`: N of `previous_days` for working days and weekend days.
    `x`/`y`: `high_x_of_y` averages the X highest of the last Y days of the same kind.
    `adjustment_periods`: the in-day adjustment window, the periods just before the event
    (0: no adjustment); `adjustment_cap`: the adjustment is capped at this share of the
    unadjusted baseline (None: uncapped). `lookback_days`: how far back days are searched.
    """

    period: timedelta = HALF_HOUR
    days: int = 10
    weekend_days: int = 4
    x: int = 10
    y: int = 10
    adjustment_periods: int = 6
    adjustment_cap: float | None = 0.2
    lookback_days: int = 60


@dataclass(frozen=True, slots=True)
class Baseline:
    """A baseline for the periods of one event: kWh per period start, or why there is none."""

    method: str
    kwh: Mapping[datetime, float] | None
    days: tuple[date, ...] = ()
    #: The in-day adjustment added to every period (kWh), `high_x_of_y` only.
    adjustment_kwh: float | None = None
    note: str = ""
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether there is a baseline."""
        return self.kwh is not None


def is_working_day(day: date) -> bool:
    """Monday to Friday (public holidays are not known here: they count as working days)."""
    return day.weekday() < 5


def _wall(ts: datetime, tz: tzinfo) -> tuple[date, time]:
    local = ts.astimezone(tz)
    return local.date(), local.time().replace(tzinfo=None)


def _at_wall(day: date, wall: time, tz: tzinfo) -> datetime | None:
    """The UTC instant of wall time `wall` on `day` in `tz`; None when the day has no such time."""
    local = datetime.combine(day, wall, tzinfo=tz)
    utc = local.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None  # skipped by the spring-forward change
    return utc


def _map_periods(periods: Sequence[datetime], event_day: date, day: date, tz: tzinfo) -> list[datetime] | None:
    """The periods of `day` with the same wall-clock times (and day offsets) as `periods` of `event_day`."""
    mapped: list[datetime] = []
    for start in periods:
        wall_day, wall = _wall(start, tz)
        at = _at_wall(day + (wall_day - event_day), wall, tz)
        if at is None:
            return None
        mapped.append(at)
    return mapped


@dataclass(frozen=True, slots=True)
class _Day:
    day: date
    event: list[float]
    window: list[float]


def _eligible_days(
    series: Mapping[datetime, float],
    periods: Sequence[datetime],
    window: Sequence[datetime],
    tz: tzinfo,
    excluded: frozenset[date],
    rules: BaselineRules,
) -> Iterable[_Day]:
    """Days before the event, newest first, of the event day's kind, with every needed period."""
    event_day = _wall(periods[0], tz)[0]
    working = is_working_day(event_day)
    for back in range(1, rules.lookback_days + 1):
        day = event_day - timedelta(days=back)
        if is_working_day(day) != working or day in excluded:
            continue
        mapped = _map_periods(periods, event_day, day, tz)
        mapped_window = _map_periods(window, event_day, day, tz) if window else []
        if mapped is None or mapped_window is None:
            continue
        if any(p not in series for p in mapped) or any(p not in series for p in mapped_window):
            continue
        yield _Day(day, [series[p] for p in mapped], [series[p] for p in mapped_window])


def _insufficient(method: str, found: int, needed: int) -> Baseline:
    return Baseline(method, None, note=f"insufficient history: {found} of {needed} days")


def previous_days(
    series: Mapping[datetime, float],
    periods: Sequence[datetime],
    tz: tzinfo,
    excluded: Iterable[date] = (),
    rules: BaselineRules | None = None,
) -> Baseline:
    """Mean of the same periods on the previous N days of the same kind without events (kWh).

    `series`: kWh per period start; `excluded`: local days with events (never baseline days).
    """
    rules = rules or BaselineRules()
    if not periods:
        return Baseline(PREVIOUS_DAYS, {}, note="no periods")
    needed = rules.days if is_working_day(_wall(periods[0], tz)[0]) else rules.weekend_days
    days: list[_Day] = []
    for day in _eligible_days(series, periods, (), tz, frozenset(excluded), rules):
        days.append(day)
        if len(days) == needed:
            break
    if len(days) < needed:
        return _insufficient(PREVIOUS_DAYS, len(days), needed)
    kwh = {p: math.fsum(d.event[i] for d in days) / len(days) for i, p in enumerate(periods)}
    return Baseline(PREVIOUS_DAYS, kwh, tuple(d.day for d in days))


def adjustment_window(periods: Sequence[datetime], rules: BaselineRules) -> list[datetime]:
    """The in-day adjustment window: the `adjustment_periods` periods just before the event."""
    first = periods[0]
    return [first - rules.period * k for k in range(rules.adjustment_periods, 0, -1)]


def high_x_of_y(
    series: Mapping[datetime, float],
    periods: Sequence[datetime],
    tz: tzinfo,
    excluded: Iterable[date] = (),
    rules: BaselineRules | None = None,
) -> Baseline:
    """The X highest (by event-window energy) of the last Y days of the same kind, plus an in-day adjustment.

    The adjustment is the mean per-period difference, over the window before the event,
    between the event day and the selected days; it is added to every event period, capped
    at `adjustment_cap` of the unadjusted mean per period, and never takes a period below 0.
    Without the event day's window data the baseline is left unadjusted (the note says so).
    """
    rules = rules or BaselineRules()
    if not periods:
        return Baseline(HIGH_X_OF_Y, {}, note="no periods")
    window = adjustment_window(periods, rules)
    days: list[_Day] = []
    for day in _eligible_days(series, periods, window, tz, frozenset(excluded), rules):
        days.append(day)
        if len(days) == rules.y:
            break
    if len(days) < rules.y:
        return _insufficient(HIGH_X_OF_Y, len(days), rules.y)
    # highest first; equal days: the more recent first (they were found newest first)
    ranked = sorted(enumerate(days), key=lambda item: (-math.fsum(item[1].event), item[0]))
    chosen = [day for _, day in ranked[: rules.x]]
    unadjusted = {p: math.fsum(d.event[i] for d in chosen) / len(chosen) for i, p in enumerate(periods)}
    note = ""
    adjustment: float | None = None
    if window:
        if all(p in series for p in window):
            actual = math.fsum(series[p] for p in window) / len(window)
            typical = math.fsum(math.fsum(d.window) for d in chosen) / (len(chosen) * len(window))
            adjustment = actual - typical
            if rules.adjustment_cap is not None:
                limit = rules.adjustment_cap * math.fsum(unadjusted.values()) / len(unadjusted)
                if abs(adjustment) > limit:
                    note = f"adjustment capped at {rules.adjustment_cap:.0%}"
                    adjustment = math.copysign(limit, adjustment)
        else:
            note = "adjustment unavailable: missing data before the event"
    kwh = {p: max(0.0, value + (adjustment or 0.0)) for p, value in unadjusted.items()}
    return Baseline(
        HIGH_X_OF_Y,
        kwh,
        tuple(sorted((d.day for d in chosen), reverse=True)),
        adjustment,
        note,
    )


def snapshot(power_w: float | None, periods: Sequence[datetime], rules: BaselineRules | None = None) -> Baseline:
    """The power at the event start (W) held over every period (kWh); no reading, no baseline."""
    rules = rules or BaselineRules()
    if power_w is None:
        return Baseline(SNAPSHOT, None, note="no reading at the event start")
    kwh = max(0.0, power_w) / 1000 * rules.period.total_seconds() / 3600
    return Baseline(SNAPSHOT, dict.fromkeys(periods, kwh), extra={"power_w": power_w})
