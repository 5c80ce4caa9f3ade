"""Simulated meters: one believable household for demos, tests and benchmarks.

`Household` is the home itself: the power of each of its parts (house, heat pump, EV
charger, solar array) is a pure function of the seed and the time, so any number of meters
(each its own source, even in another process) measure the same home, and a week of it can be
computed after the fact (scripts/demo_backfill.py fills Home Assistant's statistics with it).
Meters with the same `seed` are parts of one home: at every timestamp the `grid` meter reads
house + heat pump + EV - solar (with the heat pump, EV and solar it is configured to have).

`HouseholdModel` is one meter of it: `step(ts, dt_s)` returns the readings for the interval
ending at `ts`. Power is held constant over each interval, so the energy totals are exactly
the integral of the published power (import accumulates positive power, export negative).
Sources put their readings on a grid of multiples of `interval_s` since the epoch, so meters
with the same interval report the same instants.

Profiles:
- `grid`: the whole house at the meter: base load, fridge cycling, kettle and oven, morning
  and evening peaks; plus the heat pump (`heat_pump_w`), the EV charger (`ev_w`) and the solar
  array (`pv_peak_w`) behind it, which drives it negative around midday (export counts up).
- `solar`: the PV inverter alone; generation is export (negative power), following the seasons.
- `heat_pump`: a compressor cycling, more on cold nights, days and seasons, defrost bursts.
- `ev`: an EV charger: 7.2 kW sessions from about 18:00 on most days until the car is full.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from enum import IntEnum

from ..model import MeterDescription, Quantity, Reading
from . import Source, SourceContext
from .simulated_config import Profile, SimulatedSourceConfig

_NOMINAL_VOLTAGE = 230.0
_NOMINAL_FREQUENCY = 50.0
_DAY_S = 86_400
_MASK64 = (1 << 64) - 1
#: Typical ratings when `rated_w` is 0.
DEFAULT_SOLAR_W = 4000.0
DEFAULT_HEAT_PUMP_W = 2500.0
DEFAULT_EV_W = 7200.0


class _Stream(IntEnum):
    """Independent random streams of a household (one per thing that varies)."""

    BASE = 1
    KETTLE = 2
    KETTLE_AT = 3
    OVEN = 4
    OVEN_AT = 5
    WEATHER = 6
    CLOUD = 7
    COLD = 8
    HEAT_PUMP = 9
    EV = 10
    EV_AT = 11
    EV_KWH = 12
    VOLTAGE = 13
    FREQUENCY = 14


def _unit(seed: int, stream: _Stream, index: int) -> float:
    """A number in [0, 1) that depends only on its arguments (splitmix64 of their mix).

    A hash rather than a random generator: the value for any instant is known without
    replaying everything before it, so independent meters and a backfill agree.
    """
    z = (seed * 0x100000001B3 + int(stream) * 0x9E3779B97F4A7C15 + index * 0xD6E8FEB86659FD93) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) / 2.0**64


def _hour_of_day(t: float) -> float:
    return (t % _DAY_S) / 3600.0


def _summer(t: float) -> float:
    """1 at midsummer (21 June), -1 at midwinter: drives day length, sun and heating."""
    day_of_year = (t / _DAY_S - 10_957.0) % 365.2425  # days since 2000-01-01, within the year
    return math.cos(2 * math.pi * (day_of_year - 171.5) / 365.2425)


class Household:
    """The power of each part of one simulated home at epoch second `t` (W, all >= 0, UTC hours)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def _u(self, stream: _Stream, index: int) -> float:
        return _unit(self.seed, stream, index)

    def house_w(self, t: float) -> float:
        """Everything but the heat pump, EV and solar: base load, fridge, peaks, kettle, oven."""
        hour = _hour_of_day(t)
        minute = int(t // 60) % 60
        base = 140.0 + 20.0 * (self._u(_Stream.BASE, int(t)) - 0.5)
        fridge = 90.0 if minute % 50 < 20 else 0.0
        evening = 900.0 * math.exp(-(((hour - 18.5) / 1.5) ** 2))
        morning = 400.0 * math.exp(-(((hour - 7.5) / 0.8) ** 2))
        # a kettle (3 min at 2.8 kW) in about a quarter of the waking half-hours
        slot = int(t // 1800)
        kettle = 0.0
        if 6.0 <= _hour_of_day(slot * 1800) < 23.0 and self._u(_Stream.KETTLE, slot) < 0.25:
            on = slot * 1800 + self._u(_Stream.KETTLE_AT, slot) * 1620
            kettle = 2800.0 if on <= t < on + 180 else 0.0
        # the oven (40 min at 2 kW) on most early evenings
        day = int(t // _DAY_S)
        oven = 0.0
        if self._u(_Stream.OVEN, day) < 0.6:
            on = day * _DAY_S + 17 * 3600 + self._u(_Stream.OVEN_AT, day) * 5400
            oven = 2000.0 if on <= t < on + 2400 else 0.0
        return base + fridge + evening + morning + kettle + oven

    def _cloud(self, t: float) -> float:
        # each day has its weather (clear to overcast); clouds drift between knots 10 min apart
        clear = 0.35 + 0.65 * self._u(_Stream.WEATHER, int(t // _DAY_S))
        knot, frac = divmod(t / 600.0, 1.0)

        def at(k: int) -> float:
            return min(1.0, max(0.15, clear + 0.5 * (self._u(_Stream.CLOUD, k) - 0.5)))

        return at(int(knot)) * (1.0 - frac) + at(int(knot) + 1) * frac

    def solar_w(self, t: float, peak_w: float) -> float:
        """Generation of an array of `peak_w` (W, >= 0): long strong days in summer, short weak ones in winter."""
        summer = _summer(t)
        half_day = 5.5 + 2.0 * summer  # hours from solar noon (12:30 UTC) to sunset
        since_sunrise = _hour_of_day(t) - (12.5 - half_day)
        if not 0.0 < since_sunrise < 2 * half_day:
            return 0.0
        strength = 0.6 + 0.4 * summer
        return float(peak_w * strength * math.sin(math.pi * since_sunrise / (2 * half_day)) ** 1.5 * self._cloud(t))

    def heat_pump_w(self, t: float, rated_w: float) -> float:
        """A heat pump of `rated_w`: cycles, runs more at night and on cold days, defrosts."""
        hour = _hour_of_day(t)
        minute = int(t // 60) % 60
        cold = (0.8 + 0.4 * self._u(_Stream.COLD, int(t // _DAY_S))) * (1.0 - 0.35 * _summer(t))
        demand = min(0.95, (0.35 + 0.45 * math.cos(math.pi * (hour - 5.0) / 12.0) ** 2) * cold)
        if (minute % 30) / 30 > demand:
            return 15.0  # controller standby
        defrost = 1.3 if hour < 9 and minute % 45 < 3 else 1.0
        return rated_w * (0.5 + 0.3 * demand) * defrost + 80.0 * (self._u(_Stream.HEAT_PUMP, int(t)) - 0.5)

    def ev_w(self, t: float, rated_w: float) -> float:
        """An EV charger of `rated_w`: on most days the car comes home 18:00-19:00 and charges full."""
        today = int(t // _DAY_S)
        for day in (today, today - 1):  # a session can run past midnight
            if self._u(_Stream.EV, day) >= 0.75:
                continue
            start = day * _DAY_S + 18 * 3600 + self._u(_Stream.EV_AT, day) * 3600
            energy_kwh = 10.0 + 30.0 * self._u(_Stream.EV_KWH, day)
            if start <= t < start + energy_kwh * 3_600_000 / rated_w:
                return rated_w
        return 0.0

    def voltage_v(self, t: float) -> float:
        """Supply voltage (the same at every meter of the home)."""
        return _NOMINAL_VOLTAGE + 4.0 * math.sin(t / 600) + 2.0 * (self._u(_Stream.VOLTAGE, int(t)) - 0.5)

    def frequency_hz(self, t: float) -> float:
        """Grid frequency."""
        return _NOMINAL_FREQUENCY + 0.1 * (self._u(_Stream.FREQUENCY, int(t)) - 0.5)


class HouseholdModel:
    """One meter of a `Household`: its power at an instant and its running totals."""

    def __init__(self, config: SimulatedSourceConfig) -> None:
        self.meter_id = config.id
        self.config = config
        self.household = Household(config.seed)
        self.energy_import_kwh = config.start_import_kwh
        self.energy_export_kwh = config.start_export_kwh

    @property
    def has_export(self) -> bool:
        """Whether the meter can export (and so publishes `energy_export`)."""
        return self.config.profile == "solar" or (self.config.profile == "grid" and self.config.pv_peak_w > 0)

    def power_w(self, ts: datetime | float) -> float:
        """Power at `ts` (W, import positive, 0.1 W resolution); held over the interval ending there.

        Each part is rounded before the grid meter adds them up, so the grid meter's reading
        is exactly the sum of what the other meters of the home read (plus the house).
        """
        t = ts.timestamp() if isinstance(ts, datetime) else ts
        cfg, home = self.config, self.household
        if cfg.profile == "solar":
            return 0.0 - round(home.solar_w(t, cfg.rated_w or DEFAULT_SOLAR_W), 1)  # 0.0 - x: never "-0.0"
        if cfg.profile == "heat_pump":
            return round(home.heat_pump_w(t, cfg.rated_w or DEFAULT_HEAT_PUMP_W), 1)
        if cfg.profile == "ev":
            return round(home.ev_w(t, cfg.rated_w or DEFAULT_EV_W), 1)
        parts = [round(home.house_w(t), 1)]
        if cfg.heat_pump_w:
            parts.append(round(home.heat_pump_w(t, cfg.heat_pump_w), 1))
        if cfg.ev_w:
            parts.append(round(home.ev_w(t, cfg.ev_w), 1))
        if cfg.pv_peak_w:
            parts.append(-round(home.solar_w(t, cfg.pv_peak_w), 1))
        return round(math.fsum(parts), 1)

    def energy_kwh(self, start: float, end: float, step_s: float) -> tuple[float, float]:
        """(import, export) kWh over epoch seconds [start, end), power held over each `step_s`.

        Pure: the running totals are not touched. Steps end at multiples of `step_s` since the
        epoch (the last one is cut at `end`), the grid the sources report on.
        """
        imported = exported = 0.0
        t = start
        while t < end:
            step_end = (math.floor(t / step_s) + 1) * step_s
            power = self.power_w(step_end)  # the power of the whole step, even when cut at `end`
            energy = abs(power) * (min(end, step_end) - t) / 3_600_000
            if power >= 0:
                imported += energy
            else:
                exported += energy
            t = step_end
        return imported, exported

    def step(self, ts: datetime, dt_s: float) -> list[Reading]:
        """Readings for the `dt_s` seconds ending at `ts`; totals advance by power x time."""
        t = ts.timestamp()
        power = self.power_w(t)
        energy_kwh = abs(power) * dt_s / 3_600_000
        if power >= 0:
            self.energy_import_kwh += energy_kwh
        else:
            self.energy_export_kwh += energy_kwh
        voltage = round(self.household.voltage_v(t), 1)
        readings = [
            Reading.of(self.meter_id, Quantity.POWER, power, ts),
            Reading.of(self.meter_id, Quantity.ENERGY_IMPORT, self.energy_import_kwh, ts),
            Reading.of(self.meter_id, Quantity.VOLTAGE, voltage, ts),
            Reading.of(self.meter_id, Quantity.CURRENT, round(abs(power) / voltage, 3), ts),
            Reading.of(self.meter_id, Quantity.FREQUENCY, round(self.household.frequency_hz(t), 3), ts),
        ]
        if self.has_export:
            readings.append(Reading.of(self.meter_id, Quantity.ENERGY_EXPORT, self.energy_export_kwh, ts))
        return readings


_MODELS: dict[Profile, str] = {
    "grid": "Simulated smart meter",
    "solar": "Simulated PV inverter",
    "heat_pump": "Simulated heat pump meter",
    "ev": "Simulated EV charger meter",
}


class SimulatedSource(Source[SimulatedSourceConfig]):
    """Emits a `HouseholdModel`'s readings every `interval_s` of simulated time."""

    source_type = "simulated"

    async def run(self, ctx: SourceContext) -> None:
        """Emit readings until cancelled; simulated time runs `speed` times faster."""
        cfg = self.config
        model = HouseholdModel(cfg)
        ctx.describe(
            MeterDescription(
                meter_id=cfg.id,
                name=cfg.display_name,
                source_type=self.source_type,
                manufacturer="meter-bridge",
                model=_MODELS[cfg.profile],
            )
        )
        ctx.availability(cfg.id, True)
        loop = asyncio.get_running_loop()
        now_s = datetime.now(UTC).timestamp()
        # Readings fall on multiples of interval_s since the epoch, so the meters of a household
        # report the same instants; the first one comes when its instant is due.
        started_sim = datetime.fromtimestamp(math.floor(now_s / cfg.interval_s) * cfg.interval_s, UTC)
        started_real = loop.time() - (now_s - started_sim.timestamp()) / cfg.speed
        step = 0
        while True:
            step += 1
            # sleep until this step's real-time deadline: no drift however long it runs
            deadline = started_real + step * cfg.interval_s / cfg.speed
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            ts = started_sim + timedelta(seconds=step * cfg.interval_s)
            ctx.readings(model.step(ts, cfg.interval_s))
