"""Readings to InfluxDB line protocol: the schema of the `meters` bucket (pure, no I/O).

Schema (published: never rename):

- **measurement**: the source family of the meter (its config `type`, one per entry of
  `meterbridge.families.SOURCE_FAMILIES`); `unknown` for a meter whose description has not
  been seen. Environment quantities (`model.ENVIRONMENT`: temperature, humidity, CO2, flow
  and return temperature, heat energy and power) go to the measurement `environment`
  instead, with the same tags, so building data is queried apart from electricity and the
  energy task's totals (issue 20). Both are in the one bucket, so edge replication carries them.
- **tags**: `site` (the site id), `meter` (the meter id), `source` (the device the
  meter is read through: the `via` device of a channel/phase, else the meter itself),
  `phase` (only for one phase of a multi-phase meter).
- **fields**: one float field per quantity, named as the quantity: `power` W (import
  positive, export negative), `energy_import` / `energy_export` kWh (totals),
  `voltage` V, `current` A, `frequency` Hz, `power_factor`, `price` currency/kWh;
  in `environment`: `temperature` / `flow_temperature` / `return_temperature` °C, `humidity` %,
  `co2` ppm, `heat_energy` kWh (total), `heat_power` W.
- **timestamp**: the reading's time in milliseconds since the epoch (`precision=ms`).

Readings of one meter with the same timestamp share one line (one point with several
fields): that is how InfluxDB stores them anyway, and it makes the spool and the
requests about four times smaller.

Example: `simulated,meter=grid,site=home,source=grid power=512,voltage=231.2 1732219200000`

The encoding follows the line protocol reference
(https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/) and gives the
same text as influxdb-client's `Point` (sorted tags and fields, whole floats without
`.0`, non-finite values left out); `tests/unit/test_influx_lineprotocol_spool.py` checks
that against `Point` itself. It is written here because importing influxdb-client costs
the bridge 15 MiB of its 60 MiB memory budget, and `Point` was a tenth of its CPU per
reading.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from ...model import ENVIRONMENT, MeterDescription, Point, Quantity, Reading

#: The write precision of every line (the `precision` parameter of the write API).
PRECISION = "ms"
UNKNOWN_FAMILY = "unknown"
ENVIRONMENT_MEASUREMENT = "environment"

_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


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


def _tag_value(value: str) -> str:
    escaped = value.translate(_KEY_ESCAPES)
    return escaped + " " if escaped.endswith("\\") else escaped  # a trailing backslash would escape the comma


@lru_cache(maxsize=4096)
def series_key(tags: SeriesTags) -> str:
    """`measurement,tag=value,...` of a series (tags sorted by key; empty values left out)."""
    pairs = {"meter": tags.meter, "phase": tags.phase, "site": tags.site, "source": tags.source}
    parts = [tags.measurement.translate(_MEASUREMENT_ESCAPES)]
    parts.extend(f"{key}={_tag_value(value)}" for key, value in sorted(pairs.items()) if value)
    return ",".join(parts)


def _float(value: float) -> str:
    text = str(float(value))
    return text[:-2] if text.endswith(".0") else text


def timestamp_ms(ts: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    return (ts - _EPOCH) // _MILLISECOND


def line(tags: SeriesTags, values: Mapping[Quantity, float], ts: datetime) -> str | None:
    """One line: fields are the quantities of `values` at `ts` (None when no value is finite)."""
    fields = ",".join(
        f"{quantity.value.translate(_KEY_ESCAPES)}={_float(value)}"
        for quantity, value in sorted(values.items(), key=lambda item: item[0].value)
        if math.isfinite(value)
    )
    if not fields:
        return None
    return f"{series_key(tags)} {fields} {timestamp_ms(ts)}"


@dataclass(frozen=True, slots=True)
class Line:
    """One encoded line and how many readings it carries."""

    text: str
    readings: int


def encode(readings: Iterable[Reading], site_id: str, descriptions: Mapping[str, MeterDescription]) -> list[Line]:
    """Encode readings (oldest first) as lines; readings of one meter and instant share a line.

    Order is kept: lines come out in the order of each (meter, instant) group's first reading.
    Environment quantities of a meter form their own line in `ENVIRONMENT_MEASUREMENT`.
    """
    groups: dict[tuple[str, datetime, bool], dict[Quantity, float]] = {}
    for reading in readings:
        key = (reading.meter_id, reading.ts, reading.quantity in ENVIRONMENT)
        groups.setdefault(key, {})[reading.quantity] = reading.value
    lines: list[Line] = []
    for (meter_id, ts, environment), values in groups.items():
        tags = SeriesTags.of(site_id, meter_id, descriptions.get(meter_id))
        if environment:
            tags = replace(tags, measurement=ENVIRONMENT_MEASUREMENT)
        text = line(tags, values, ts)
        if text is not None:
            lines.append(Line(text, len(values)))
    return lines


def encode_point(point: Point) -> Line | None:
    """One `Point` (its own measurement, e.g. `flex_delivery`) as a line; None when no field is finite.

    Tags and fields sorted by key (as influxdb-client's `Point`), empty tags and non-finite fields left out.
    """
    parts = [point.measurement.translate(_MEASUREMENT_ESCAPES)]
    parts.extend(f"{key.translate(_KEY_ESCAPES)}={_tag_value(value)}" for key, value in sorted(point.tags) if value)
    fields = ",".join(
        f"{key.translate(_KEY_ESCAPES)}={_float(value)}" for key, value in sorted(point.fields) if math.isfinite(value)
    )
    if not fields:
        return None
    return Line(f"{','.join(parts)} {fields} {timestamp_ms(point.ts)}", 1)
