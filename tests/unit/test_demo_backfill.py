"""The demo's week of history (scripts/demo_backfill.py): hourly rows that chart the household,
and the lift that joins the sums Home Assistant's recorder compiles from the live entity to them.

The recorder (HA 2026.10 sensor/recorder.py `compile_statistics`) starts a `total_increasing`
sum at 0 from the entity's first recorded state (at T0), then adds every increase; the hourly
row of an hour holds the sum at its end, and a chart's bar is a row's sum minus the previous
row's. After the join, every hour's bar must be the energy the household used in that hour,
including the hour the live data starts in.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from meterbridge.model import Quantity
from meterbridge.sources.simulated import HouseholdModel
from meterbridge.sources.simulated_config import SimulatedSourceConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import itertools

from demo_backfill import backfill_rows, join_offset

HOUR = 3600
GRID = HouseholdModel(
    SimulatedSourceConfig.model_validate(
        {"type": "simulated", "id": "grid", "seed": 1, "pv_peak_w": 3500, "heat_pump_w": 2500, "ev_w": 7200}
    )
)
#: The live data starts 41 min 17 s into an hour.
FIRST_TS = datetime(2026, 6, 21, 15, 41, 17, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("quantity", [Quantity.ENERGY_IMPORT, Quantity.ENERGY_EXPORT])
def test_rows_cover_the_week_before_the_first_state_hour_by_hour(quantity: Quantity) -> None:
    rows = backfill_rows(GRID, quantity, FIRST_TS, days=7, step_s=10.0)
    current_hour = FIRST_TS - FIRST_TS % HOUR
    assert len(rows) == 7 * 24
    assert [row.start for row in rows] == [current_hour - (7 * 24 - i) * HOUR for i in range(7 * 24)]
    index = 0 if quantity is Quantity.ENERGY_IMPORT else 1
    previous_sum = 0.0  # so the first bar of any view is right too (HA charts it against 0)
    for row in rows:
        hour_kwh = GRID.energy_kwh(row.start, row.start + HOUR, 10.0)[index]
        assert row.sum - previous_sum == pytest.approx(hour_kwh, abs=1e-9)
        assert row.state == row.sum
        previous_sum = row.sum


@pytest.mark.parametrize("quantity", [Quantity.ENERGY_IMPORT, Quantity.ENERGY_EXPORT])
def test_the_hour_the_live_data_starts_in_charts_the_whole_hour_once_joined(quantity: Quantity) -> None:
    rows = backfill_rows(GRID, quantity, FIRST_TS, days=1, step_s=10.0)
    index = 0 if quantity is Quantity.ENERGY_IMPORT else 1
    current_hour = FIRST_TS - FIRST_TS % HOUR
    # what the recorder compiles for that hour: the live meter's increase since its zero point
    compiled_sum = GRID.energy_kwh(FIRST_TS, current_hour + HOUR, 10.0)[index]
    lifted = compiled_sum + join_offset(GRID, quantity, FIRST_TS, rows[-1].sum, 10.0)
    whole_hour = GRID.energy_kwh(current_hour, current_hour + HOUR, 10.0)[index]
    assert lifted - rows[-1].sum == pytest.approx(whole_hour, abs=1e-9)


def test_the_week_looks_like_a_household() -> None:
    rows = backfill_rows(GRID, Quantity.ENERGY_IMPORT, FIRST_TS, days=7, step_s=10.0)
    assert 10 < rows[-1].sum / 7 < 60  # kWh a day: house + heat pump + EV, less what the sun covers
    hours = [b.sum - a.sum for a, b in itertools.pairwise(rows)]
    assert min(hours) >= 0
    assert max(hours) > 3  # the EV's evening charge
