"""Delivered flexibility per event: baseline, actual and delivered energy per period (pure: no I/O).

For each event, each resource (`site` and every metered asset) and each baseline method
(`baseline.METHODS`), `settle` gives per settlement period the baseline, the actual and the
delivered energy (kWh; delivered = baseline - actual for a turn-down, actual - baseline for
a turn-up), and totals. The rules that make every case a defined number or a stated reason
(docs/flex-settlement.md):

- A period *counts* when the household took part for the whole of it and both the
  baseline and the actual exist. `delivered_kwh` sums counted periods only;
  `measured_kwh` sums every period with data (what the home did whatever it agreed to).
- Opt-out: an event flex declined counts no period (`opted_out`); a householder's opt-out
  during the event stops counting from the period it happened in (`partial_opt_out`).
- Missing data: a period without an actual value counts nothing and is named
  (`missing_periods`); the event is `complete: false`. A method without a baseline (too
  little history, no reading at the start) says why in `note` and delivers nothing.
- An event off the period boundaries is widened to the periods it overlaps.
- Days with events are never baseline days; events sharing periods are each settled on
  their own and name each other in `overlaps` (never add their deliveries up).
- Cancelled events are listed, not settled.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Any

from ..model import Point
from .baseline import (
    HIGH_X_OF_Y,
    METHODS,
    PREVIOUS_DAYS,
    SNAPSHOT,
    Baseline,
    BaselineRules,
    EnergyRules,
    PeriodRecord,
    high_x_of_y,
    periods_between,
    previous_days,
    snapshot,
    snapshot_power,
)
from .policy import Direction

SITE = "site"

DELIVERED = "delivered"
OPTED_OUT = "opted_out"
PARTIAL_OPT_OUT = "partial_opt_out"
CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class SettlementEvent:
    """An event as settlement sees it.

    `accepted`: flex took part (False: it declined, an opt-out of the whole event).
    `opted_out_at`: when the householder opted out (None: never). `requested_w`: the change
    asked for (None: unknown, no share is given).
    """

    event_id: str
    start: datetime
    end: datetime
    direction: Direction
    requested_w: float | None
    accepted: bool = True
    cancelled: bool = False
    opted_out_at: datetime | None = None

    @property
    def requested_kwh(self) -> float | None:
        """The energy asked for over the event (kWh)."""
        if self.requested_w is None:
            return None
        return self.requested_w * (self.end - self.start).total_seconds() / 3_600_000


@dataclass(frozen=True, slots=True)
class ResourceHistory:
    """One resource's history: kWh per period start (`baseline.period_energies`), and the ledger
    records by period start (for the power at an event's start)."""

    kwh: Mapping[datetime, float]
    records: Mapping[datetime, PeriodRecord] = field(default_factory=dict)
    energy_rules: EnergyRules = field(default_factory=EnergyRules)


@dataclass(frozen=True, slots=True)
class PeriodDelivery:
    """One period of one resource by one method (kWh; None: not known)."""

    start: datetime
    baseline_kwh: float | None
    actual_kwh: float | None
    delivered_kwh: float | None
    counted: bool
    note: str = ""


@dataclass(frozen=True, slots=True)
class ResourceDelivery:
    """One resource's delivery by one method, per period and in total (kWh)."""

    resource: str
    method: str
    baseline: Baseline
    periods: tuple[PeriodDelivery, ...]
    requested_kwh: float | None

    @property
    def baseline_kwh(self) -> float:
        """Baseline over the counted periods."""
        return math.fsum(p.baseline_kwh or 0.0 for p in self.periods if p.counted)

    @property
    def actual_kwh(self) -> float:
        """Actual over the counted periods."""
        return math.fsum(p.actual_kwh or 0.0 for p in self.periods if p.counted)

    @property
    def delivered_kwh(self) -> float:
        """What counts: delivered energy over the counted periods."""
        return math.fsum(p.delivered_kwh or 0.0 for p in self.periods if p.counted)

    @property
    def measured_kwh(self) -> float | None:
        """Delivered energy over every period with data, opted out or not (None: no such period)."""
        known = [p.delivered_kwh for p in self.periods if p.delivered_kwh is not None]
        return math.fsum(known) if known else None

    @property
    def share(self) -> float | None:
        """`delivered_kwh` as a share of the requested energy (site only)."""
        if not self.requested_kwh:
            return None
        return self.delivered_kwh / self.requested_kwh

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (exports, reports)."""
        return {
            "resource": self.resource,
            "method": self.method,
            "note": self.baseline.note,
            "baseline_days": [d.isoformat() for d in self.baseline.days],
            "adjustment_kwh": _round(self.baseline.adjustment_kwh),
            "baseline_kwh": _round(self.baseline_kwh),
            "actual_kwh": _round(self.actual_kwh),
            "delivered_kwh": _round(self.delivered_kwh),
            "measured_kwh": _round(self.measured_kwh),
            "requested_kwh": _round(self.requested_kwh),
            "share_of_requested": _round(self.share),
            "periods": [
                {
                    "start": p.start.isoformat(),
                    "baseline_kwh": _round(p.baseline_kwh),
                    "actual_kwh": _round(p.actual_kwh),
                    "delivered_kwh": _round(p.delivered_kwh),
                    "counted": p.counted,
                    "note": p.note,
                }
                for p in self.periods
            ],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass(frozen=True, slots=True)
class EventDelivery:
    """One event's settlement: every resource by every method."""

    event: SettlementEvent
    status: str
    periods: tuple[datetime, ...]
    resources: tuple[ResourceDelivery, ...]
    missing_periods: tuple[datetime, ...] = ()
    overlaps: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether the site's actual energy is known for every period."""
        return not self.missing_periods

    def get(self, resource: str, method: str) -> ResourceDelivery | None:
        """The delivery of `resource` by `method`."""
        return next((r for r in self.resources if r.resource == resource and r.method == method), None)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (the per-event export)."""
        event = self.event
        return {
            "event_id": event.event_id,
            "start": event.start.isoformat(),
            "end": event.end.isoformat(),
            "direction": event.direction.value,
            "requested_w": event.requested_w,
            "requested_kwh": _round(event.requested_kwh),
            "status": self.status,
            "opted_out_at": None if event.opted_out_at is None else event.opted_out_at.isoformat(),
            "complete": self.complete,
            "missing_periods": [p.isoformat() for p in self.missing_periods],
            "overlaps": list(self.overlaps),
            "deliveries": [r.to_json() for r in self.resources],
        }


def _status(event: SettlementEvent) -> str:
    if event.cancelled:
        return CANCELLED
    if not event.accepted or (event.opted_out_at is not None and event.opted_out_at <= event.start):
        return OPTED_OUT
    if event.opted_out_at is not None and event.opted_out_at < event.end:
        return PARTIAL_OPT_OUT
    return DELIVERED


def event_days(events: Iterable[SettlementEvent], tz: tzinfo, rules: BaselineRules | None = None) -> set[date]:
    """Local days touched by an event that was not cancelled (never baseline days)."""
    rules = rules or BaselineRules()
    days: set[date] = set()
    for event in events:
        if event.cancelled:
            continue
        for start in periods_between(event.start, event.end, rules.period):
            days.add(start.astimezone(tz).date())
    return days


def _baseline(
    method: str,
    history: ResourceHistory,
    event: SettlementEvent,
    periods: Sequence[datetime],
    tz: tzinfo,
    excluded: set[date],
    rules: BaselineRules,
) -> Baseline:
    if method == PREVIOUS_DAYS:
        return previous_days(history.kwh, periods, tz, excluded, rules)
    if method == HIGH_X_OF_Y:
        return high_x_of_y(history.kwh, periods, tz, excluded, rules)
    if method == SNAPSHOT:
        return snapshot(snapshot_power(history.records, event.start, history.energy_rules), periods, rules)
    raise ValueError(f"unknown baseline method {method!r}")


def settle(
    event: SettlementEvent,
    histories: Mapping[str, ResourceHistory],
    tz: tzinfo,
    excluded: set[date],
    rules: BaselineRules | None = None,
    others: Sequence[SettlementEvent] = (),
) -> EventDelivery:
    """Settle `event` for every resource in `histories` (`SITE` first) by every method.

    `excluded`: local days that are not baseline days (`event_days` of every event);
    `others`: the other events, to name overlaps.
    """
    rules = rules or BaselineRules()
    status = _status(event)
    periods = tuple(periods_between(event.start, event.end, rules.period))
    overlaps = tuple(
        sorted(
            o.event_id
            for o in others
            if o.event_id != event.event_id and not o.cancelled and o.start < event.end and event.start < o.end
        )
    )
    if status == CANCELLED or not periods:
        return EventDelivery(event, status, periods, (), (), overlaps)
    sign = -1.0 if event.direction is Direction.DOWN else 1.0
    resources: list[ResourceDelivery] = []
    site_missing: tuple[datetime, ...] = ()
    for resource in sorted(histories, key=lambda r: (r != SITE, r)):
        history = histories[resource]
        missing = tuple(p for p in periods if p not in history.kwh)
        if resource == SITE:
            site_missing = missing
        for method in METHODS:
            baseline = _baseline(method, history, event, periods, tz, excluded, rules)
            rows = []
            for start in periods:
                participating = status != OPTED_OUT and (
                    event.opted_out_at is None or event.opted_out_at >= start + rules.period
                )
                actual = history.kwh.get(start)
                base = None if baseline.kwh is None else baseline.kwh.get(start)
                delivered = None if actual is None or base is None else sign * (actual - base)
                note = ""
                if not participating:
                    note = "opted out"
                elif actual is None:
                    note = "missing data"
                elif base is None:
                    note = "no baseline"
                rows.append(
                    PeriodDelivery(start, base, actual, delivered, participating and delivered is not None, note)
                )
            requested = event.requested_kwh if resource == SITE else None
            resources.append(ResourceDelivery(resource, method, baseline, tuple(rows), requested))
    return EventDelivery(event, status, periods, tuple(resources), site_missing, overlaps)


#: Columns of the per-event CSV (one row per resource, method and period, then a `total` row).
CSV_COLUMNS = (
    "event_id",
    "status",
    "resource",
    "method",
    "period_start",
    "baseline_kwh",
    "actual_kwh",
    "delivered_kwh",
    "counted",
    "note",
    "requested_kwh",
    "share_of_requested",
)


def csv_rows(delivery: EventDelivery) -> list[dict[str, Any]]:
    """The per-event CSV as rows (`CSV_COLUMNS`)."""
    rows: list[dict[str, Any]] = []
    event_id, status = delivery.event.event_id, delivery.status
    for resource in delivery.resources:
        base = {"event_id": event_id, "status": status, "resource": resource.resource, "method": resource.method}
        for p in resource.periods:
            rows.append(
                base
                | {
                    "period_start": p.start.isoformat(),
                    "baseline_kwh": _round(p.baseline_kwh),
                    "actual_kwh": _round(p.actual_kwh),
                    "delivered_kwh": _round(p.delivered_kwh),
                    "counted": p.counted,
                    "note": p.note,
                    "requested_kwh": None,
                    "share_of_requested": None,
                }
            )
        rows.append(
            base
            | {
                "period_start": "total",
                "baseline_kwh": _round(resource.baseline_kwh),
                "actual_kwh": _round(resource.actual_kwh),
                "delivered_kwh": _round(resource.delivered_kwh),
                "counted": any(p.counted for p in resource.periods),
                "note": resource.baseline.note,
                "requested_kwh": _round(resource.requested_kwh),
                "share_of_requested": _round(resource.share),
            }
        )
    return rows


#: The InfluxDB measurement of deliveries (published: never rename).
DELIVERY_MEASUREMENT = "flex_delivery"


def delivery_points(delivery: EventDelivery, site_id: str) -> list[Point]:
    """The delivery as InfluxDB points of `DELIVERY_MEASUREMENT`.

    Tags `site`, `event`, `resource`, `method` and `kind`: `period` points (at each period's
    start: `baseline_kwh`, `actual_kwh`, `delivered_kwh` where known, `counted` 1/0) and one
    `total` point at the event's start (`baseline_kwh`, `actual_kwh`, `delivered_kwh`, and
    `requested_kwh`, `share` where known).
    """
    points: list[Point] = []
    for resource in delivery.resources:
        tags = (
            ("site", site_id),
            ("event", delivery.event.event_id),
            ("resource", resource.resource),
            ("method", resource.method),
        )
        for period in resource.periods:
            fields = [
                (key, value)
                for key, value in (
                    ("baseline_kwh", period.baseline_kwh),
                    ("actual_kwh", period.actual_kwh),
                    ("delivered_kwh", period.delivered_kwh),
                )
                if value is not None
            ]
            fields.append(("counted", 1.0 if period.counted else 0.0))
            points.append(Point(DELIVERY_MEASUREMENT, (*tags, ("kind", "period")), tuple(fields), period.start))
        total = [
            ("baseline_kwh", resource.baseline_kwh),
            ("actual_kwh", resource.actual_kwh),
            ("delivered_kwh", resource.delivered_kwh),
        ]
        if resource.requested_kwh is not None:
            total.append(("requested_kwh", resource.requested_kwh))
        if resource.share is not None:
            total.append(("share", resource.share))
        points.append(Point(DELIVERY_MEASUREMENT, (*tags, ("kind", "total")), tuple(total), delivery.event.start))
    return points


def delivery_summary(delivery: EventDelivery, method: str) -> dict[str, Any]:
    """What Home Assistant shows of one event: the site's delivery by `method`, and each asset's."""
    site = delivery.get(SITE, method)
    assets = {
        r.resource: round(r.delivered_kwh, 3) for r in delivery.resources if r.resource != SITE and r.method == method
    }
    share = None if site is None or site.share is None else round(site.share * 100, 1)
    return {
        "event_id": delivery.event.event_id,
        "start": delivery.event.start.isoformat(),
        "end": delivery.event.end.isoformat(),
        "status": delivery.status,
        "method": method,
        "delivered_kwh": None if site is None else round(site.delivered_kwh, 3),
        "share_pct": share,
        "requested_kwh": _round(delivery.event.requested_kwh),
        "complete": delivery.complete,
        "note": "" if site is None else site.baseline.note,
        "assets": assets,
    }
