"""Simulated meters: a believable household for demos, tests and benchmarks.

`HouseholdModel` is pure and deterministic for a seed: `step(ts, dt_s)` returns the
readings for the interval ending at `ts`. Power is held constant over each interval,
so the energy totals are exactly the integral of the published power
(import accumulates positive power, export accumulates negative power).

Profiles:
- `grid`: the whole house at the meter: base load, fridge cycling, kettle and oven
  spikes, an evening peak; with `pv_peak_w` > 0 a solar array drives it negative
  around midday and export energy counts up.
- `solar`: a PV inverter alone; generation is export (negative power).
- `heat_pump`: a compressor cycling, with defrost bursts on cold mornings.
- `ev`: an EV charger: 7.2 kW sessions in the evening until the car is full.
"""

from __future__ import annotations

import asyncio
import math
import random
from datetime import UTC, datetime, timedelta

from ..model import MeterDescription, Quantity, Reading
from . import Source, SourceContext
from .simulated_config import Profile, SimulatedSourceConfig

_NOMINAL_VOLTAGE = 230.0
_NOMINAL_FREQUENCY = 50.0


def _hour_of_day(ts: datetime) -> float:
    return ts.hour + ts.minute / 60 + ts.second / 3600


class HouseholdModel:
    """Deterministic household power for one meter; see the module docstring."""

    def __init__(self, config: SimulatedSourceConfig) -> None:
        self.meter_id = config.id
        self.profile = config.profile
        self.pv_peak_w = config.pv_peak_w
        self.rated_w = config.rated_w
        self.energy_import_kwh = config.start_import_kwh
        self.energy_export_kwh = config.start_export_kwh
        self._rng = random.Random(config.seed)  # noqa: S311 - simulation, not crypto
        self._spike_until: datetime | None = None
        self._spike_w = 0.0
        self._ev_remaining_kwh = 0.0
        self._cloud = 1.0

    # -- power of each profile -------------------------------------------------

    def _solar_w(self, ts: datetime, peak_w: float) -> float:
        hour = _hour_of_day(ts)
        if not 6.0 < hour < 20.0:
            return 0.0
        # clouds drift slowly, so output wanders rather than flickers
        self._cloud = min(1.0, max(0.2, self._cloud + self._rng.uniform(-0.05, 0.05)))
        return float(peak_w * math.sin(math.pi * (hour - 6.0) / 14.0) ** 1.5 * self._cloud)

    def _house_w(self, ts: datetime) -> float:
        hour = _hour_of_day(ts)
        base = 140.0 + self._rng.uniform(-10, 10)
        fridge = 90.0 if (ts.minute % 50) < 20 else 0.0
        evening = 900.0 * math.exp(-(((hour - 18.5) / 1.5) ** 2))
        morning = 400.0 * math.exp(-(((hour - 7.5) / 0.8) ** 2))
        if self._spike_until is not None and ts >= self._spike_until:
            self._spike_until = None
        if self._spike_until is None and self._rng.random() < 0.004:
            # kettle (3 min at 2.8 kW) or, in the early evening, the oven (40 min at 2 kW)
            if 17 <= hour < 19 and self._rng.random() < 0.5:
                self._spike_w, minutes = 2000.0, 40
            else:
                self._spike_w, minutes = 2800.0, 3
            self._spike_until = ts + timedelta(minutes=minutes)
        spike = self._spike_w if self._spike_until is not None else 0.0
        return base + fridge + evening + morning + spike

    def _heat_pump_w(self, ts: datetime) -> float:
        rated = self.rated_w or 2500.0
        hour = _hour_of_day(ts)
        demand = 0.35 + 0.45 * math.cos(math.pi * (hour - 5.0) / 12.0) ** 2  # colder at night
        if (ts.minute % 30) / 30 > demand:
            return 15.0  # controller standby
        defrost = 1.3 if hour < 9 and ts.minute % 45 < 3 else 1.0
        return rated * (0.5 + 0.3 * demand) * defrost + self._rng.uniform(-40, 40)

    def _ev_w(self, ts: datetime, dt_s: float) -> float:
        rated = self.rated_w or 7200.0
        hour = _hour_of_day(ts)
        if self._ev_remaining_kwh <= 0 and 18.0 <= hour < 18.0 + dt_s / 3600 + 1e-9:
            self._ev_remaining_kwh = self._rng.uniform(10, 40)  # the car comes home
        if self._ev_remaining_kwh <= 0:
            return 0.0
        self._ev_remaining_kwh -= rated * dt_s / 3_600_000
        return rated

    def power_w(self, ts: datetime, dt_s: float) -> float:
        """Power over the interval ending at `ts` (W, import positive)."""
        if self.profile == "solar":
            return 0.0 - self._solar_w(ts, self.rated_w or 4000.0)  # 0.0 - x: never "-0.0" at night
        if self.profile == "heat_pump":
            return self._heat_pump_w(ts)
        if self.profile == "ev":
            return self._ev_w(ts, dt_s)
        house = self._house_w(ts)
        return house - (self._solar_w(ts, self.pv_peak_w) if self.pv_peak_w else 0.0)

    # -- readings -------------------------------------------------------------------

    def step(self, ts: datetime, dt_s: float) -> list[Reading]:
        """Readings for the `dt_s` seconds ending at `ts`; totals advance by power x time."""
        power = round(self.power_w(ts, dt_s), 1)
        energy_kwh = abs(power) * dt_s / 3_600_000
        if power >= 0:
            self.energy_import_kwh += energy_kwh
        else:
            self.energy_export_kwh += energy_kwh
        voltage = round(_NOMINAL_VOLTAGE + 4.0 * math.sin(ts.timestamp() / 600) + self._rng.uniform(-1, 1), 1)
        readings = [
            Reading.of(self.meter_id, Quantity.POWER, power, ts),
            Reading.of(self.meter_id, Quantity.ENERGY_IMPORT, self.energy_import_kwh, ts),
            Reading.of(self.meter_id, Quantity.VOLTAGE, voltage, ts),
            Reading.of(self.meter_id, Quantity.CURRENT, round(abs(power) / voltage, 3), ts),
            Reading.of(
                self.meter_id, Quantity.FREQUENCY, round(_NOMINAL_FREQUENCY + self._rng.uniform(-0.05, 0.05), 3), ts
            ),
        ]
        if self.profile == "solar" or self.pv_peak_w:
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
        started_real = loop.time()
        started_sim = datetime.now(UTC)
        step = 0
        while True:
            step += 1
            # sleep until this step's real-time deadline: no drift however long it runs
            deadline = started_real + step * cfg.interval_s / cfg.speed
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            ts = started_sim + timedelta(seconds=step * cfg.interval_s)
            ctx.readings(model.step(ts, cfg.interval_s))
