"""Per-event settlement reports from what the bridge keeps on the device.

The events come from flex's decision log (`flex.log_path`, JSON lines the controller already
writes: `opt_in`/`opt_out` with the event, the householder's `opt_out`, `event_cancelled`),
the history from the half-hour ledger (`flex.settlement.ledger_path`). `settle_from_files`
settles every event (`settlement.settle`); `write_event_files` writes `<event>.json` and
`<event>.csv` per event, the files `meter-bridge flex report` leaves for the operator.
Damaged lines in either file are named (`FILE:LINE: reason`) and skipped, never fatal.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from .baseline import BaselineRules, EnergyRules, PeriodRecord, period_energies
from .config import FlexConfig, SettlementConfig
from .events import FlexEvent
from .ledger import read_ledger
from .settlement import CSV_COLUMNS, SITE, EventDelivery, ResourceHistory, SettlementEvent, csv_rows, event_days, settle


def baseline_rules(config: SettlementConfig) -> BaselineRules:
    """The baseline methods' settings from the configuration."""
    return BaselineRules(
        period=config.period,
        days=config.days,
        weekend_days=config.weekend_days,
        x=config.high_x,
        y=config.high_y,
        adjustment_periods=config.adjustment_periods,
        adjustment_cap=config.adjustment_cap,
        lookback_days=config.lookback_days,
    )


def energy_rules(config: SettlementConfig) -> EnergyRules:
    """How energy per period is derived, with the configured period."""
    return EnergyRules(period=config.period)


@dataclass(frozen=True, slots=True)
class EventLog:
    """The events found in a decision log, and its damaged lines."""

    events: list[SettlementEvent]
    problems: list[str]


def _settlement_event(event: FlexEvent, requested_w: float | None, accepted: bool) -> SettlementEvent:
    return SettlementEvent(
        event.event_id, event.start, event.end, event.direction, requested_w, accepted, event.cancelled
    )


def read_event_log(path: Path) -> EventLog:
    """Events from the controller's decision log (a missing file has none); raises `OSError` when unreadable.

    The latest `opt_in`/`opt_out` of an event replaces earlier ones (a modified event); the
    householder's first `opt_out` after it was accepted sets `opted_out_at`.
    """
    events: dict[str, SettlementEvent] = {}
    problems: list[str] = []
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return EventLog([], [])
    with handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                entry = json.loads(text)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
                kind = entry.get("kind")
                if kind in ("opt_in", "opt_out") and "event" in entry:
                    event = FlexEvent.from_json(entry["event"])
                    requested = entry.get("requested_w", event.target_w)
                    known = events.get(event.event_id)
                    settled = _settlement_event(
                        event, None if requested is None else float(requested), kind == "opt_in"
                    )
                    if known is not None and known.opted_out_at is not None:
                        settled = replace(settled, opted_out_at=known.opted_out_at)
                    events[event.event_id] = settled
                elif kind == "opt_out" and entry.get("event_id") in events:
                    known = events[entry["event_id"]]
                    if known.opted_out_at is None:
                        events[known.event_id] = replace(known, opted_out_at=datetime.fromisoformat(entry["ts"]))
                elif kind == "event_cancelled" and entry.get("event_id") in events:
                    events[entry["event_id"]] = replace(events[entry["event_id"]], cancelled=True)
            except (ValueError, KeyError, TypeError) as err:
                problems.append(f"{path}:{number}: {err!r}")
    return EventLog(sorted(events.values(), key=lambda e: (e.start, e.event_id)), problems)


def histories(
    records: dict[str, list[PeriodRecord]], flex: FlexConfig, rules: EnergyRules
) -> dict[str, ResourceHistory]:
    """The site's and each metered asset's history from ledger records (by meter id)."""
    meters: dict[str, str] = {}
    if flex.site_meter_id:
        meters[SITE] = flex.site_meter_id
    for asset in flex.assets:
        if asset.meter_id:
            meters[asset.id] = asset.meter_id
    out: dict[str, ResourceHistory] = {}
    for resource, meter_id in meters.items():
        meter_records = records.get(meter_id, [])
        by_start: dict[datetime, PeriodRecord] = {}
        for record in meter_records:
            known = by_start.get(record.start)
            by_start[record.start] = record if known is None else known.merge(record)
        kwh = {start: energy.kwh for start, energy in period_energies(meter_records, rules).items()}
        out[resource] = ResourceHistory(kwh, by_start, rules)
    return out


@dataclass(frozen=True, slots=True)
class Report:
    """Every event settled, and what was wrong with the files read."""

    deliveries: list[EventDelivery]
    problems: list[str]


def settle_events(
    events: Sequence[SettlementEvent], resources: dict[str, ResourceHistory], config: SettlementConfig
) -> list[EventDelivery]:
    """Settle each of `events` against `resources`."""
    rules = baseline_rules(config)
    excluded = event_days(events, config.zone, rules)
    return [settle(e, resources, config.zone, excluded, rules, events) for e in events]


def settle_from_files(
    flex: FlexConfig, ledger_path: Path | None = None, log_path: Path | None = None, ids: Iterable[str] = ()
) -> Report:
    """Read the ledger and the decision log and settle every event (or those in `ids`)."""
    config = flex.settlement
    ledger = read_ledger(ledger_path or flex.ledger_path)
    log = read_event_log(log_path or flex.log_path)
    wanted = set(ids)
    resources = histories(ledger.records, flex, energy_rules(config))
    deliveries = settle_events(log.events, resources, config)
    if wanted:
        deliveries = [d for d in deliveries if d.event.event_id in wanted]
    return Report(deliveries, ledger.problems + log.problems)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def write_event_files(deliveries: Iterable[EventDelivery], out_dir: Path, site_id: str) -> list[Path]:
    """Write `<site>-<event>.json` and `.csv` per event into `out_dir`; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for delivery in deliveries:
        stem = _UNSAFE.sub("_", f"{site_id}-{delivery.event.event_id}")
        data: dict[str, Any] = {"site": site_id, **delivery.to_json()}
        json_path = out_dir / f"{stem}.json"
        json_path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        csv_path = out_dir / f"{stem}.csv"
        with csv_path.open("w", encoding="utf-8", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=("site", *CSV_COLUMNS))
            writer.writeheader()
            for row in csv_rows(delivery):
                writer.writerow({"site": site_id, **row})
        written += [json_path, csv_path]
    return written


def summary_lines(deliveries: Iterable[EventDelivery]) -> list[str]:
    """One line per event and method for the terminal: the site's delivered kWh and share."""
    lines = [f"{'event':<24} {'status':<16} {'method':<14} {'delivered kWh':>13} {'share':>7}  note"]
    for delivery in deliveries:
        site = [r for r in delivery.resources if r.resource == SITE]
        if not site:
            lines.append(f"{delivery.event.event_id:<24} {delivery.status:<16} {'-':<14} {'-':>13} {'-':>7}")
            continue
        for resource in site:
            share = "-" if resource.share is None else f"{resource.share:.0%}"
            notes = [resource.baseline.note] if resource.baseline.note else []
            if delivery.missing_periods:
                notes.append(f"{len(delivery.missing_periods)} period(s) without data")
            lines.append(
                f"{delivery.event.event_id:<24} {delivery.status:<16} {resource.method:<14} "
                f"{resource.delivered_kwh:>13.3f} {share:>7}  {'; '.join(notes)}"
            )
    return lines
