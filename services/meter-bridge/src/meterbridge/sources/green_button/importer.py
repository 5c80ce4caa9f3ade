"""Import ESPI interval data: hour sums into HA long-term statistics, totals into the sinks.

Used by `meter-bridge import green-button FILE` and by the green_button source after each
download. Statistics ids are `hems:<meter>_energy_import` / `hems:<meter>_energy_export`.
Readings handed to the sinks follow the model's contract for totals: `energy_import` /
`energy_export` are running totals (kWh, non-negative) stamped at the end of each hour, so a
time-series sink (InfluxDB) gets one point per hour. With HA statistics they are HA's running
`sum` (continuous across imports; only changed hours are re-sent); without, they count from
the start of the file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol, TextIO, runtime_checkable

from ...errors import SinkError
from ...model import Event, MeterDescription, Quantity, Reading
from ...sinks import Sink
from ...statistics import HOUR_S, HaStatisticsClient, HourlyEnergy
from .espi import Direction, EspiParser, EspiReport, IntervalReading

CHUNK_BYTES = 256 * 1024
STATISTICS_SOURCE = "hems"
#: How long a one-shot import waits for InfluxDB to acknowledge what it wrote.
SEND_TIMEOUT_S = 120.0
QUANTITY = {Direction.DELIVERED: Quantity.ENERGY_IMPORT, Direction.RECEIVED: Quantity.ENERGY_EXPORT}


@dataclass
class ImportSummary:
    """What one ESPI document held, summed into UTC hours."""

    report: EspiReport
    hours: dict[Direction, HourlyEnergy] = field(default_factory=lambda: {d: HourlyEnergy() for d in Direction})

    def add(self, readings: Iterable[IntervalReading]) -> None:
        """Add parsed interval readings (Wh) to the hour sums (kWh)."""
        for reading in readings:
            self.hours[reading.direction].add(reading.start, reading.duration_s, reading.energy_wh / 1000.0)

    @property
    def span(self) -> tuple[datetime, datetime] | None:
        """First and last hour (UTC starts) with data, None when empty."""
        starts = [hour for energy in self.hours.values() for hour in energy.kwh]
        if not starts:
            return None
        return datetime.fromtimestamp(min(starts), UTC), datetime.fromtimestamp(max(starts), UTC)

    def describe(self) -> str:
        """The human summary `--dry-run` prints."""
        report = self.report
        lines = [f"readings: {report.readings}"]
        span = self.span
        if span is not None:
            lines.append(f"first hour (UTC): {span[0].isoformat()}")
            lines.append(f"last hour (UTC):  {span[1].isoformat()}")
        lines.append(f"delivered (import): {self.hours[Direction.DELIVERED].total():.3f} kWh")
        lines.append(f"received (export):  {self.hours[Direction.RECEIVED].total():.3f} kWh")
        lines.append(
            f"duplicates dropped: {report.duplicates}, gaps: {report.gaps}, out of order: {report.out_of_order}, "
            f"skipped (unit/direction/bad): {report.skipped_unit}/{report.skipped_direction}/{report.bad_values}"
        )
        if report.local_time is not None:
            lines.append(
                f"local time: UTC{report.local_time.tz_offset_s / 3600:+g} h, DST +{report.local_time.dst_offset_s} s"
            )
        return "\n".join(lines)


def parse_stream(
    stream: BinaryIO, size: int | None = None, progress: Callable[[int, int | None], None] | None = None
) -> ImportSummary:
    """Parse an ESPI document from `stream` in chunks into hour sums. Raises `ParseError`."""
    parser = EspiParser()
    summary = ImportSummary(parser.report)
    done = 0
    while chunk := stream.read(CHUNK_BYTES):
        summary.add(parser.feed(chunk))
        done += len(chunk)
        if progress is not None:
            progress(done, size)
    summary.add(parser.close())
    return summary


def parse_file(path: Path, progress: Callable[[int, int | None], None] | None = None) -> ImportSummary:
    """Parse an ESPI file. Raises `ParseError` (bad XML) or `OSError` (unreadable)."""
    with path.open("rb") as stream:
        return parse_stream(stream, path.stat().st_size, progress)


def statistic_id(meter_id: str, direction: Direction) -> str:
    """`hems:<meter>_energy_import` (delivered) or `hems:<meter>_energy_export` (received)."""
    return f"{STATISTICS_SOURCE}:{meter_id}_{QUANTITY[direction].value}"


def total_readings(meter_id: str, summary: ImportSummary) -> list[Reading]:
    """Running totals (kWh) at the end of every hour, per direction, oldest first."""
    readings: list[Reading] = []
    for direction, energy in summary.hours.items():
        running = 0.0
        for hour in sorted(energy.kwh):
            running += energy.kwh[hour]
            ts = datetime.fromtimestamp(hour + HOUR_S, UTC)
            readings.append(Reading.of(meter_id, QUANTITY[direction], running, ts))
    readings.sort(key=lambda r: r.ts)
    return readings


def progress_printer(stream: TextIO | None = None) -> Callable[[int, int | None], None] | None:
    """A one-line stderr progress display, or None when stderr is not a terminal."""
    out = sys.stderr if stream is None else stream
    if not out.isatty():
        return None

    def show(done: int, size: int | None) -> None:
        if size:
            out.write(f"\rparsing: {done * 100 // size:3d}% ({done // 1024} KiB)")
        if size is None or done >= size:
            out.write("\n")
        out.flush()

    return show


@dataclass
class ImportResult:
    """Rows written to HA per statistic id, and readings handed to sinks."""

    rows_written: dict[str, int] = field(default_factory=dict)
    readings_sent: int = 0
    readings: list[Reading] = field(default_factory=list)  # hourly totals (kWh) at each hour's end


async def import_summary(
    summary: ImportSummary,
    meter_id: str,
    name: str,
    statistics: HaStatisticsClient | None,
    sinks: Sequence[Sink] = (),
    source_type: str = "green_button",
) -> ImportResult:
    """Write `summary` to HA statistics (if a client is given) and to `sinks`.

    Raises `SinkError`/`AuthError` from the HA client; a sink is started, fed (a description
    naming `source_type`, the InfluxDB measurement, then the totals), drained and closed here.
    """
    result = ImportResult()
    readings: list[Reading] = []
    if statistics is not None:
        for direction, energy in summary.hours.items():
            if not energy.kwh:
                continue
            sid = statistic_id(meter_id, direction)
            label = f"{name} energy {'import' if direction is Direction.DELIVERED else 'export'}"
            rows = await statistics.import_hours(sid, label, energy.kwh)
            result.rows_written[sid] = len(rows)
            # totals anchored in HA's running sum, so they continue across imports
            readings.extend(
                Reading.of(meter_id, QUANTITY[direction], row.sum, datetime.fromtimestamp(row.start + HOUR_S, UTC))
                for row in rows
            )
        readings.sort(key=lambda r: r.ts)
    else:
        readings = total_readings(meter_id, summary)
    result.readings = readings
    if sinks:
        description = MeterDescription(meter_id, name, source_type, manufacturer="Utility")
        await write_history(sinks, [description, *readings])
        result.readings_sent = len(readings)
    return result


@runtime_checkable
class AcknowledgingSink(Protocol):
    """A sink that can say when everything handed to it is stored (the InfluxDB sink)."""

    async def wait_sent(self, timeout_s: float) -> bool:
        """True once every event handled so far is stored, False after `timeout_s`."""


async def write_history(sinks: Sequence[Sink], events: Sequence[Event], timeout_s: float = SEND_TIMEOUT_S) -> None:
    """Start each sink, hand it `events`, wait until it stored them, close it.

    Raises `SinkError` when a sink has not stored everything within `timeout_s` (what it
    still holds stays in its spool and is sent by the next run).
    """
    for sink in sinks:
        await sink.start()
        try:
            await sink.handle(events)
            if isinstance(sink, AcknowledgingSink) and not await sink.wait_sent(timeout_s):
                raise SinkError(f"sink {sink.name}: not everything was stored within {timeout_s:.0f} s (kept spooled)")
        finally:
            await sink.close()
