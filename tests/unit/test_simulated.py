"""The simulated household: one home whatever the number of meters, deterministic, believable,
energy = integral of power."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meterbridge.model import Quantity
from meterbridge.sources.simulated import HouseholdModel
from meterbridge.sources.simulated_config import SimulatedSourceConfig

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


#: The demo's home (scripts/demo.sh): one seed, the grid meter knows what is behind it.
DEMO_HOME = {
    "grid": config(id="grid", profile="grid", seed=1, pv_peak_w=3500, heat_pump_w=2500, ev_w=7200),
    "solar": config(id="solar", profile="solar", seed=1, rated_w=3500),
    "heat_pump": config(id="heat_pump", profile="heat_pump", seed=1, rated_w=2500),
    "ev": config(id="ev", profile="ev", seed=1, rated_w=7200),
}


@pytest.mark.parametrize("profile", ["grid", "solar", "heat_pump", "ev"])
def test_energy_totals_are_the_integral_of_power(profile: str) -> None:
    step_s = 10.0
    states = run_day(config(profile=profile, pv_peak_w=3500, heat_pump_w=2000, ev_w=7200, seed=7), step_s)
    imported = sum(max(s[Quantity.POWER], 0) for s in states) * step_s / 3_600_000
    exported = sum(max(-s[Quantity.POWER], 0) for s in states) * step_s / 3_600_000
    assert states[-1][Quantity.ENERGY_IMPORT] == pytest.approx(imported, rel=1e-9, abs=1e-12)
    assert states[-1].get(Quantity.ENERGY_EXPORT, 0.0) == pytest.approx(exported, rel=1e-9, abs=1e-12)
    # totals never go backwards
    totals = [s[Quantity.ENERGY_IMPORT] for s in states]
    assert totals == sorted(totals)


def test_the_meters_of_one_seed_are_one_home_at_every_instant() -> None:
    """grid = house + heat pump + EV - solar, to the 0.1 W, whichever instant the meters read."""
    models = {meter: HouseholdModel(cfg) for meter, cfg in DEMO_HOME.items()}
    seen_export = seen_ev_and_heat_pump = False
    for n in range(0, 7 * 86_400, 97):  # a week, at instants that are not on any round grid
        t = START.timestamp() + n + 0.25
        power = {meter: model.power_w(t) for meter, model in models.items()}
        house = round(models["grid"].household.house_w(t), 1)
        assert power["grid"] == pytest.approx(house + power["heat_pump"] + power["ev"] + power["solar"], abs=1e-6)
        assert house > 100  # what the grid meter sees beyond the metered parts is a plausible house
        seen_export |= power["grid"] < 0
        seen_ev_and_heat_pump |= power["ev"] > 0 and power["heat_pump"] > 100
    assert seen_export
    assert seen_ev_and_heat_pump


def test_energy_of_one_home_adds_up_over_a_day() -> None:
    """Net grid energy = the loads' energy - solar energy - nothing else but the house."""
    models = {meter: HouseholdModel(cfg) for meter, cfg in DEMO_HOME.items()}
    start, end = START.timestamp(), START.timestamp() + 86_400
    energy = {meter: model.energy_kwh(start, end, 2.0) for meter, model in models.items()}
    house_kwh = sum(round(models["grid"].household.house_w(start + 2.0 * k), 1) for k in range(1, 43_201)) / 1_800_000
    net_grid = energy["grid"][0] - energy["grid"][1]
    loads = energy["heat_pump"][0] + energy["ev"][0] - energy["solar"][1]
    assert net_grid == pytest.approx(house_kwh + loads, rel=1e-9)
    assert energy["solar"][0] == 0.0
    assert energy["grid"][1] > 1.0  # the sunny middle of a June day is exported


def test_energy_kwh_matches_what_the_meter_publishes() -> None:
    cfg = DEMO_HOME["grid"]
    states = run_day(cfg, step_s=2.0)
    imported, exported = HouseholdModel(cfg).energy_kwh(START.timestamp(), START.timestamp() + 86_400, 2.0)
    assert imported == pytest.approx(states[-1][Quantity.ENERGY_IMPORT], rel=1e-9)
    assert exported == pytest.approx(states[-1][Quantity.ENERGY_EXPORT], rel=1e-9)
    # split anywhere (not on the step grid), the parts add up to the whole
    model = HouseholdModel(cfg)
    middle = START.timestamp() + 40_001.3
    first = model.energy_kwh(START.timestamp(), middle, 2.0)
    second = model.energy_kwh(middle, START.timestamp() + 86_400, 2.0)
    assert first[0] + second[0] == pytest.approx(imported, rel=1e-9)
    assert first[1] + second[1] == pytest.approx(exported, rel=1e-9)


def test_same_seed_same_household_other_seed_other_household() -> None:
    assert run_day(config(seed=1)) == run_day(config(seed=1))
    assert run_day(config(seed=1)) != run_day(config(seed=2))
    # and the same instant reads the same whenever and however often it is asked
    model = HouseholdModel(config(seed=4, heat_pump_w=2500, ev_w=7200, pv_peak_w=3000))
    t = START.timestamp() + 12 * 3600 + 17
    assert model.power_w(t) == HouseholdModel(config(seed=4, heat_pump_w=2500, ev_w=7200, pv_peak_w=3000)).power_w(t)


def test_pv_drives_the_grid_meter_negative_at_midday_and_counts_export() -> None:
    states = run_day(config(pv_peak_w=4000, seed=3))
    midday = states[len(states) // 2]
    assert midday[Quantity.POWER] < 0
    assert states[-1][Quantity.ENERGY_EXPORT] > 1.0


def test_household_is_believable() -> None:
    for seed in range(5):
        powers = [s[Quantity.POWER] for s in run_day(config(seed=seed))]
        daily_kwh = sum(powers) * 10 / 3_600_000
        assert 3.0 < daily_kwh < 20.0  # a typical home uses 5-15 kWh a day without heat pump or EV
        assert min(powers) > 50  # there is always a base load
        evening = powers[int(18.5 * 360)]
        night = powers[(3 * 360)]
        assert evening > night
    # a kettle or the oven shows up on most days
    assert sum(max(s[Quantity.POWER] for s in run_day(config(seed=seed))) > 2000 for seed in range(5)) >= 4


def test_voltage_current_and_frequency_are_plausible() -> None:
    for state in run_day(config(seed=2), step_s=600):
        assert 220 < state[Quantity.VOLTAGE] < 240
        assert 49.9 < state[Quantity.FREQUENCY] < 50.1
        assert state[Quantity.CURRENT] == pytest.approx(abs(state[Quantity.POWER]) / state[Quantity.VOLTAGE], abs=1e-3)


def test_solar_never_imports_and_ev_charges_in_the_evening() -> None:
    solar = run_day(config(profile="solar", seed=1))
    assert all(s[Quantity.POWER] <= 0 for s in solar)
    assert solar[-1][Quantity.ENERGY_IMPORT] == 0
    charged_days = 0
    for seed in range(4):
        ev = [s[Quantity.POWER] for s in run_day(config(profile="ev", seed=seed))]
        assert max(ev[6 * 360 : 18 * 360]) == 0  # nobody charges during the day
        charged_days += max(ev[18 * 360 :]) == 7200
    assert charged_days >= 2
