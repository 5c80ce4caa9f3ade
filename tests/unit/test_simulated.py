"""The simulated household: deterministic, believable, energy = integral of power."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meterbridge.model import Quantity
from meterbridge.sources.simulated import HouseholdModel, SimulatedSourceConfig

START = datetime(2026, 6, 21, 0, 0, tzinfo=UTC)


def run_day(config: SimulatedSourceConfig, step_s: float = 10.0) -> list[dict[Quantity, float]]:
    model = HouseholdModel(config)
    states = []
    for n in range(1, int(86_400 / step_s) + 1):
        readings = model.step(START + timedelta(seconds=n * step_s), step_s)
        states.append({r.quantity: r.value for r in readings})
    return states


def config(**kwargs: object) -> SimulatedSourceConfig:
    return SimulatedSourceConfig.model_validate({"type": "simulated", "id": "grid", **kwargs})


@pytest.mark.parametrize("profile", ["grid", "solar", "heat_pump", "ev"])
def test_energy_totals_are_the_integral_of_power(profile: str) -> None:
    step_s = 10.0
    states = run_day(config(profile=profile, pv_peak_w=3500, seed=7), step_s)
    imported = sum(max(s[Quantity.POWER], 0) for s in states) * step_s / 3_600_000
    exported = sum(max(-s[Quantity.POWER], 0) for s in states) * step_s / 3_600_000
    assert states[-1][Quantity.ENERGY_IMPORT] == pytest.approx(imported, rel=1e-9, abs=1e-12)
    assert states[-1].get(Quantity.ENERGY_EXPORT, 0.0) == pytest.approx(exported, rel=1e-9, abs=1e-12)
    # totals never go backwards
    totals = [s[Quantity.ENERGY_IMPORT] for s in states]
    assert totals == sorted(totals)


def test_same_seed_same_household_other_seed_other_household() -> None:
    assert run_day(config(seed=1)) == run_day(config(seed=1))
    assert run_day(config(seed=1)) != run_day(config(seed=2))


def test_pv_drives_the_grid_meter_negative_at_midday_and_counts_export() -> None:
    states = run_day(config(pv_peak_w=4000, seed=3))
    midday = states[len(states) // 2]
    assert midday[Quantity.POWER] < 0
    assert states[-1][Quantity.ENERGY_EXPORT] > 1.0


def test_household_is_believable() -> None:
    powers = [s[Quantity.POWER] for s in run_day(config(seed=5))]
    daily_kwh = sum(powers) * 10 / 3_600_000
    assert 3.0 < daily_kwh < 20.0  # a typical home uses 5-15 kWh a day
    assert min(powers) > 50  # there is always a base load
    assert max(powers) > 2000  # a kettle or oven shows up
    evening = powers[int(18.5 * 360)]
    night = powers[(3 * 360)]
    assert evening > night


def test_voltage_current_and_frequency_are_plausible() -> None:
    for state in run_day(config(seed=2), step_s=600):
        assert 220 < state[Quantity.VOLTAGE] < 240
        assert 49.9 < state[Quantity.FREQUENCY] < 50.1
        assert state[Quantity.CURRENT] == pytest.approx(abs(state[Quantity.POWER]) / state[Quantity.VOLTAGE], abs=1e-3)


def test_solar_never_imports_and_ev_charges_in_the_evening() -> None:
    solar = run_day(config(profile="solar", seed=1))
    assert all(s[Quantity.POWER] <= 0 for s in solar)
    assert solar[-1][Quantity.ENERGY_IMPORT] == 0
    ev = [s[Quantity.POWER] for s in run_day(config(profile="ev", seed=1))]
    assert max(ev[: 17 * 360]) == 0
    assert max(ev[18 * 360 :]) == 7200
