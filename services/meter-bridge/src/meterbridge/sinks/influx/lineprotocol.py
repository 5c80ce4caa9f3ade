"""Readings to InfluxDB line protocol: the schema of the `meters` bucket (pure, no I/O).

Schema (published: never rename):

- **measurement**: the source family of the meter (`simulated`, `emu2`, `shelly`,
  `zigbee2mqtt`, `glow`, `ha`, `green_button`, `opower`, `duke_energy`); `unknown` for
  a meter whose description has not been seen.
- **tags**: `site` (the site id), `meter` (the meter id), `source` (the device the
  meter is read through: the `via` device of a channel/phase, else the meter itself),
  `phase` (only for one phase of a multi-phase meter).
- **fields**: one float field per quantity, named as the quantity: `power` W (import
  positive, export negative), `energy_import` / `energy_export` kWh (totals),
  `voltage` V, `current` A, `frequency` Hz, `power_factor`, `price` currency/kWh.
- **timestamp**: the reading's time in milliseconds since the epoch (`precision=ms`).

Readings of one meter with the same timestamp share one line (one point with several
fields): that is how InfluxDB stores them anyway, and it makes the spool and the
requests about four times smaller.

Example: `simulated,meter=grid,site=home,source=grid power=512.0,voltage=231.2 1732219200000`
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from ...model import MeterDescription, Quantity, Reading

#: The write precision of every line.
PRECISION = cast(WritePrecision, WritePrecision.MS)  # a str constant; the write API is annotated with the class
UNKNOWN_FAMILY = "unknown"


@dataclass(frozen=True, slots=True)
class SeriesTags:
    """The measurement and tags of one meter's points."""

    measurement: str
    site: str
    meter: str
    source: str
    phase: str | None = None

    @classmethod
    def of(cls, site_id: str, meter_id: str, description: MeterDescription | None) -> SeriesTags:
        """Tags of `meter_id` from its description (None: not described yet)."""
        if description is None:
            return cls(UNKNOWN_FAMILY, site_id, meter_id, meter_id)
        return cls(
            description.source_type or UNKNOWN_FAMILY,
            site_id,
            meter_id,
            description.via or meter_id,
            description.phase,
        )


def point(tags: SeriesTags, values: Mapping[Quantity, float], ts: datetime) -> Point:
    """One influxdb-client `Point`: fields are the quantities of `values` at `ts`."""
    # influxdb-client is untyped: its Point does the line protocol escaping for us
    p: Point = Point(tags.measurement)  # type: ignore[no-untyped-call]
    p = p.tag("site", tags.site).tag("meter", tags.meter).tag("source", tags.source)  # type: ignore[no-untyped-call]
    if tags.phase:
        p = p.tag("phase", tags.phase)  # type: ignore[no-untyped-call]
    for quantity, value in values.items():
        p = p.field(quantity.value, float(value))  # type: ignore[no-untyped-call]
    timed: Point = p.time(ts, PRECISION)  # type: ignore[no-untyped-call]
    return timed


@dataclass(frozen=True, slots=True)
class Line:
    """One encoded line and how many readings it carries."""

    text: str
    readings: int


def encode(readings: Iterable[Reading], site_id: str, descriptions: Mapping[str, MeterDescription]) -> list[Line]:
    """Encode readings (oldest first) as lines; readings of one meter and instant share a line.

    Order is kept: lines come out in the order of each (meter, instant) group's first reading.
    """
    groups: dict[tuple[str, datetime], dict[Quantity, float]] = {}
    for reading in readings:
        groups.setdefault((reading.meter_id, reading.ts), {})[reading.quantity] = reading.value
    lines: list[Line] = []
    for (meter_id, ts), values in groups.items():
        tags = SeriesTags.of(site_id, meter_id, descriptions.get(meter_id))
        text = str(point(tags, values, ts).to_line_protocol())  # type: ignore[no-untyped-call]
        lines.append(Line(text, len(values)))
    return lines
