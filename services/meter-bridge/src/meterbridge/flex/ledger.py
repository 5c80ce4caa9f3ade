"""The half-hour ledger: per meter and settlement period, what baselines need, kept on the device.

Why a ledger of its own and not InfluxDB: the bridge writes readings to InfluxDB but the
settlement must also work where InfluxDB is not (a hobbyist's Pi, the test peer
VictoriaMetrics has no Flux), on a history the bridge itself vouches for. The ledger is
small and cheap on the SD card: one JSON line per meter per period (~200 bytes), appended
in one write per period for all meters (`LedgerFile.flush`), so ten meters cost ~100 kB a
day; lines older than `keep_days` are dropped when the file is opened.

- `PeriodAccumulator` (pure): readings in, closed `PeriodRecord`s out. It keeps a period's
  first and last `energy_import` total, the integral of import power (a sample's value is
  held until the next, over gaps up to `max_gap`), the last power reading, and marks a
  period `broken` when a total goes down or jumps (a meter replaced). A reading older than
  the period being recorded (a clock stepping back) is counted and left out.
- `LedgerFile`: the JSON-lines file. A damaged line is skipped and named (`FILE:LINE`),
  never fatal; a period written twice (a restart mid-period) is merged when read.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..model import Quantity, Reading
from .baseline import EnergyRules, PeriodRecord, period_start


@dataclass(slots=True)
class _Meter:
    #: The period being recorded, as it stands (a new record for each reading: records are frozen).
    open: PeriodRecord | None = None
    power: tuple[datetime, float] | None = None
    total: tuple[datetime, float] | None = None


@dataclass(slots=True)
class PeriodAccumulator:
    """Readings of the meters in `meter_ids` -> closed `PeriodRecord`s (see the module docstring)."""

    meter_ids: frozenset[str]
    rules: EnergyRules = field(default_factory=EnergyRules)
    late_readings: int = 0
    _meters: dict[str, _Meter] = field(default_factory=dict)

    def feed(self, reading: Reading) -> list[PeriodRecord]:
        """Take one reading; returns the periods it closed (oldest first)."""
        if reading.meter_id not in self.meter_ids:
            return []
        if reading.quantity is not Quantity.POWER and reading.quantity is not Quantity.ENERGY_IMPORT:
            return []
        meter = self._meters.setdefault(reading.meter_id, _Meter())
        ts = reading.ts
        start = period_start(ts, self.rules.period)
        if meter.open is not None and start < meter.open.start:
            self.late_readings += 1
            return []
        closed: list[PeriodRecord] = []
        if reading.quantity is Quantity.POWER:
            self._integrate(meter, ts, reading.meter_id, closed)
        elif meter.open is not None and start > meter.open.start:
            closed.append(meter.open)
            meter.open = None
        current = meter.open
        if current is None:
            current = PeriodRecord(reading.meter_id, start)
        if reading.quantity is Quantity.POWER:
            meter.power = (ts, reading.value)
            meter.open = replace(current, last_power_ts=ts, last_power_w=reading.value)
        else:
            meter.open = self._total(meter, current, ts, reading.value)
        return closed

    def _total(self, meter: _Meter, current: PeriodRecord, ts: datetime, kwh: float) -> PeriodRecord:
        """`current` with the total `kwh` at `ts` taken in."""
        previous = meter.total
        broken = current.broken
        if previous is not None and previous[0] < ts:
            rise = kwh - previous[1]
            seconds = (ts - previous[0]).total_seconds()
            if rise < 0 or rise * 3_600_000 / seconds > self.rules.max_power_w:
                broken = current.first_ts is not None  # a break at the very start is seen at the boundary
        meter.total = (ts, kwh)
        if current.first_ts is None:
            return replace(current, first_ts=ts, first_kwh=kwh, last_ts=ts, last_kwh=kwh, broken=broken)
        return replace(current, last_ts=ts, last_kwh=kwh, broken=broken)

    def _integrate(self, meter: _Meter, ts: datetime, meter_id: str, closed: list[PeriodRecord]) -> None:
        """Hold the previous power sample until `ts`, split at period ends; close the periods `ts` is past."""
        period = self.rules.period
        previous = meter.power
        if previous is not None and previous[0] < ts and ts - previous[0] <= self.rules.max_gap:
            at, watts = previous
            while at < ts:
                piece = period_start(at, period)
                end = min(ts, piece + period)
                current = meter.open
                if current is not None and current.start > piece:
                    at = end  # that piece's period was closed by a total already: left out
                    continue
                if current is not None and current.start < piece:
                    closed.append(current)
                    current = None
                if current is None:
                    current = PeriodRecord(meter_id, piece)
                seconds = (end - at).total_seconds()
                meter.open = replace(
                    current,
                    power_wh=current.power_wh + max(0.0, watts) * seconds / 3600,
                    power_s=current.power_s + seconds,
                )
                at = end
        if meter.open is not None and period_start(ts, period) > meter.open.start:
            closed.append(meter.open)
            meter.open = None

    def flush(self) -> list[PeriodRecord]:
        """Every open period as it stands (at shutdown; the rest of it is merged in when read)."""
        out = [m.open for m in self._meters.values() if m.open is not None]
        for meter in self._meters.values():
            meter.open = None
        return out


# -- the file -----------------------------------------------------------------------------------


def _epoch(ts: datetime | None) -> float | None:
    return None if ts is None else round(ts.timestamp(), 3)


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"time {value!r} is not finite")
    return datetime.fromtimestamp(number, UTC)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not finite")
    return number


def encode_record(record: PeriodRecord) -> str:
    """One ledger line (JSON, compact keys: the SD card pays for every byte)."""
    data: dict[str, Any] = {"m": record.meter_id, "p": _epoch(record.start)}
    if record.first_ts is not None:
        data |= {"ft": _epoch(record.first_ts), "fk": record.first_kwh}
    if record.last_ts is not None:
        data |= {"lt": _epoch(record.last_ts), "lk": record.last_kwh}
    if record.power_s:
        data |= {"pw": round(record.power_wh, 4), "ps": round(record.power_s, 3)}
    if record.last_power_ts is not None:
        data |= {"pt": _epoch(record.last_power_ts), "pv": record.last_power_w}
    if record.broken:
        data["b"] = 1
    return json.dumps(data, separators=(",", ":"))


def decode_record(text: str) -> PeriodRecord:
    """Inverse of `encode_record`; raises `ValueError` (or `KeyError`/`TypeError`) on a damaged line."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not an object")
    start = _time(data["p"])
    if start is None:
        raise ValueError("no period start")
    return PeriodRecord(
        str(data["m"]),
        start,
        _time(data.get("ft")),
        _number(data.get("fk")),
        _time(data.get("lt")),
        _number(data.get("lk")),
        _number(data.get("pw")) or 0.0,
        _number(data.get("ps")) or 0.0,
        _time(data.get("pt")),
        _number(data.get("pv")),
        bool(data.get("b", 0)),
    )


@dataclass(frozen=True, slots=True)
class LedgerContents:
    """What a ledger file held: records by meter, and the damaged lines (`FILE:LINE: reason`)."""

    records: dict[str, list[PeriodRecord]]
    problems: list[str]


def read_ledger(path: Path) -> LedgerContents:
    """Read a ledger file (a missing file is an empty ledger); raises `OSError` when unreadable."""
    records: dict[str, list[PeriodRecord]] = {}
    problems: list[str] = []
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return LedgerContents(records, problems)
    with handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = decode_record(text)
            except (ValueError, KeyError, TypeError) as err:
                problems.append(f"{path}:{number}: {err!r}")
                continue
            records.setdefault(record.meter_id, []).append(record)
    return LedgerContents(records, problems)


class LedgerFile:
    """The ledger on disk: append closed periods in one write, drop old lines when opened."""

    def __init__(self, path: Path, keep_days: float = 70.0) -> None:
        self.path = path
        self.keep = timedelta(days=keep_days)

    def compact(self, now: datetime) -> int:
        """Rewrite the file without records older than `keep_days` (only when there are some); returns lines dropped."""
        contents = read_ledger(self.path)
        cutoff = now - self.keep
        kept = [r for rs in contents.records.values() for r in rs if r.start >= cutoff]
        total = sum(len(rs) for rs in contents.records.values())
        if len(kept) == total and not contents.problems:
            return 0
        kept.sort(key=lambda r: (r.start, r.meter_id))
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as file:
            file.writelines(encode_record(r) + "\n" for r in kept)
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(self.path)
        return total - len(kept)

    def append(self, records: Sequence[PeriodRecord] | Iterable[PeriodRecord]) -> None:
        """Append `records` in one write; raises `OSError`."""
        text = "".join(encode_record(r) + "\n" for r in records)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(text)
