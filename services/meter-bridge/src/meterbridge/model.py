"""The data model shared by every source and sink.

A `Reading` is one measured value of one meter at one instant. Quantities and their
units are fixed (see `UNITS`): sources convert to them, sinks rely on them.

Sign convention: `power` is positive when the site (or circuit) imports energy and
negative when it exports. `energy_import`, `energy_export`, `gas_energy` and
`heat_energy` are non-negative, monotonically increasing totals in kWh.

Environment quantities (`ENVIRONMENT`: room temperature and humidity, CO2, a heat pump's
or heat meter's flow and return temperatures, heat energy and heat power) are carried for
retrofit evaluation (issue 20): they separate the effect of fabric, heating system and
behaviour, which meter data alone cannot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum


class Quantity(StrEnum):
    """What a reading measures. The values are published keys: never rename them."""

    POWER = "power"
    ENERGY_IMPORT = "energy_import"
    ENERGY_EXPORT = "energy_export"
    VOLTAGE = "voltage"
    CURRENT = "current"
    FREQUENCY = "frequency"
    POWER_FACTOR = "power_factor"
    PRICE = "price"
    #: Gas used, as energy (kWh) the way UK smart meters report it; a running total.
    GAS_ENERGY = "gas_energy"
    #: Fixed daily charge of a tariff (currency per day).
    STANDING_CHARGE = "standing_charge"
    #: Radio link to the meter (e.g. the EMU-2's Zigbee LinkStrength), 0-100 %.
    LINK_QUALITY = "link_quality"
    #: Energy the meter counted since the start of its current accumulation period (EMU-2
    #: `CurrentPeriodUsage`), kWh; starts again when the period is closed, so not a lifetime
    #: total (and negative on a net-exporting meter).
    ENERGY_PERIOD = "energy_period"
    #: When that period started, as a Unix time (s): Home Assistant's `last_reset` of it.
    ENERGY_PERIOD_START = "energy_period_start"
    #: Energy of the previous, closed period (EMU-2 `LastPeriodUsage`), kWh.
    ENERGY_LAST_PERIOD = "energy_last_period"
    #: Air temperature (a room sensor), °C.
    TEMPERATURE = "temperature"
    #: Relative humidity, %.
    HUMIDITY = "humidity"
    #: CO2 concentration, ppm.
    CO2 = "co2"
    #: Water temperature leaving the heat source (heat pump, boiler, heat meter), °C.
    FLOW_TEMPERATURE = "flow_temperature"
    #: Water temperature coming back to the heat source, °C.
    RETURN_TEMPERATURE = "return_temperature"
    #: Heat delivered (a heat meter or heat pump's own count), kWh; a running total.
    HEAT_ENERGY = "heat_energy"
    #: Heat output right now (thermal, not electrical), W.
    HEAT_POWER = "heat_power"


class Unit(StrEnum):
    """The one unit each quantity is carried in."""

    WATT = "W"
    KILOWATT_HOUR = "kWh"
    VOLT = "V"
    AMPERE = "A"
    HERTZ = "Hz"
    RATIO = ""
    CURRENCY_PER_KWH = "currency/kWh"
    CURRENCY_PER_DAY = "currency/day"
    PERCENT = "%"
    #: Seconds since 1970-01-01 UTC (an instant, not a duration).
    UNIX_TIME = "s"
    CELSIUS = "°C"
    PPM = "ppm"


UNITS: dict[Quantity, Unit] = {
    Quantity.POWER: Unit.WATT,
    Quantity.ENERGY_IMPORT: Unit.KILOWATT_HOUR,
    Quantity.ENERGY_EXPORT: Unit.KILOWATT_HOUR,
    Quantity.VOLTAGE: Unit.VOLT,
    Quantity.CURRENT: Unit.AMPERE,
    Quantity.FREQUENCY: Unit.HERTZ,
    Quantity.POWER_FACTOR: Unit.RATIO,
    Quantity.PRICE: Unit.CURRENCY_PER_KWH,
    Quantity.GAS_ENERGY: Unit.KILOWATT_HOUR,
    Quantity.STANDING_CHARGE: Unit.CURRENCY_PER_DAY,
    Quantity.LINK_QUALITY: Unit.PERCENT,
    Quantity.ENERGY_PERIOD: Unit.KILOWATT_HOUR,
    Quantity.ENERGY_PERIOD_START: Unit.UNIX_TIME,
    Quantity.ENERGY_LAST_PERIOD: Unit.KILOWATT_HOUR,
    Quantity.TEMPERATURE: Unit.CELSIUS,
    Quantity.HUMIDITY: Unit.PERCENT,
    Quantity.CO2: Unit.PPM,
    Quantity.FLOW_TEMPERATURE: Unit.CELSIUS,
    Quantity.RETURN_TEMPERATURE: Unit.CELSIUS,
    Quantity.HEAT_ENERGY: Unit.KILOWATT_HOUR,
    Quantity.HEAT_POWER: Unit.WATT,
}

#: Quantities that are running totals: they must never be dropped by rate limiting
#: and must never go backwards in what Home Assistant sees.
TOTALS: frozenset[Quantity] = frozenset(
    {Quantity.ENERGY_IMPORT, Quantity.ENERGY_EXPORT, Quantity.GAS_ENERGY, Quantity.HEAT_ENERGY}
)

#: Quantities of the building and its heating rather than of electricity: InfluxDB keeps them
#: in their own measurement (`sinks.influx.lineprotocol.ENVIRONMENT_MEASUREMENT`).
ENVIRONMENT: frozenset[Quantity] = frozenset(
    {
        Quantity.TEMPERATURE,
        Quantity.HUMIDITY,
        Quantity.CO2,
        Quantity.FLOW_TEMPERATURE,
        Quantity.RETURN_TEMPERATURE,
        Quantity.HEAT_ENERGY,
        Quantity.HEAT_POWER,
    }
)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one quantity of one meter at `ts`.

    `value` is in `unit`, which must be `UNITS[quantity]`; `ts` is timezone-aware
    (normalised to UTC). Raises `ValueError` on a unit that does not match the
    quantity, a naive timestamp, a value that is not finite or a negative total.
    Use `Reading.of(...)` to have the unit filled in.
    """

    meter_id: str
    quantity: Quantity
    value: float
    unit: Unit
    ts: datetime

    def __post_init__(self) -> None:
        # Every reading of every source passes here: the checks read each field once and
        # skip work that cannot change anything (a UTC stamp, a value already a float),
        # which makes a Reading ~30% cheaper to build (EMU-2 parser benchmark).
        quantity, value, ts = self.quantity, self.value, self.ts
        expected = UNITS[quantity]
        if self.unit is not expected:
            raise ValueError(f"{quantity} must be in {expected.value!r}, not {self.unit.value!r}")
        if ts.tzinfo is not UTC:
            if ts.tzinfo is None:
                raise ValueError("Reading.ts must be timezone-aware")
            if ts.utcoffset():
                object.__setattr__(self, "ts", ts.astimezone(UTC))
        if not math.isfinite(value):
            raise ValueError(f"{quantity} value must be finite, got {value!r}")
        if value < 0 and quantity in TOTALS:
            raise ValueError(f"{quantity} is a total and cannot be negative ({value!r})")
        if type(value) is not float:
            object.__setattr__(self, "value", float(value))

    @classmethod
    def of(cls, meter_id: str, quantity: Quantity, value: float, ts: datetime) -> Reading:
        """A reading in the quantity's own unit (`UNITS[quantity]`)."""
        return cls(meter_id, quantity, value, UNITS[quantity], ts)


@dataclass(frozen=True, slots=True)
class MeterAvailability:
    """A meter became reachable (`available=True`) or unreachable."""

    meter_id: str
    available: bool
    ts: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class MeterDescription:
    """What a sink needs to present a meter as a device (Home Assistant device block).

    `source_type` is the source family (`emu2`, `shelly`...); `phase` is set for
    one phase of a multi-phase meter.
    """

    meter_id: str
    name: str
    source_type: str
    manufacturer: str | None = None
    model: str | None = None
    sw_version: str | None = None
    hw_version: str | None = None
    serial: str | None = None
    phase: str | None = None
    via: str | None = None


@dataclass(frozen=True, slots=True)
class Point:
    """A point of a measurement of its own for InfluxDB, not a meter reading (flex deliveries, issue 27).

    Tags and fields as (key, value) pairs; `ts` timezone-aware. Sinks other than InfluxDB ignore it.
    """

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, float], ...]
    ts: datetime


#: Everything that flows from sources through the hub to sinks.
Event = Reading | MeterAvailability | MeterDescription | Point
