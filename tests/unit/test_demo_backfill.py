"""The demo's week of history (scripts/demo_backfill.py): hourly rows that join the sums Home
Assistant's recorder compiles from the live entity afterwards.

The recorder (HA 2026.10 sensor/recorder.py `compile_statistics`) starts a `total_increasing`
sum at 0 from the entity's first recorded state E0, then adds every increase; the hourly row of
an hour holds the sum at its end. The imported rows must make every hour's change (sum minus the
previous row's sum) the energy the household used in that hour, including the hour the live
data starts in.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from meterbridge.model import Quantity
from meterbridge.sources.simulated import HouseholdModel, SimulatedSourceConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import itertools

from demo_backfill import backfill_rows

HOUR = 3600
GRID = HouseholdModel(
    SimulatedSourceConfig.model_validate(
        {"type": "simulated", "id": "grid", "seed": 1, "pv_peak_w": 3500, "heat_pump_w": 2500, "ev_w": 7200}
    )
)
#: The live data starts 41 min 17 s into an hour.
FIRST_TS = datetime(2026, 6, 21, 15, 41, 17, tzinfo=UTC).timestamp()
FIRST_KWH = 6613.4


@pytest.mark.parametrize("quantity", [Quantity.ENERGY_IMPORT, Quantity.ENERGY_EXPORT])
def test_rows_cover_the_week_before_the_first_state_hour_by_hour(quantity: Quantity) -> None:
    rows = backfill_rows(GRID, quantity, FIRST_TS, FIRST_KWH, days=7, step_s=10.0)
    current_hour = FIRST_TS - FIRST_TS % HOUR
    assert len(rows) == 7 * 24
    assert [row.start for row in rows] == [current_hour - (7 * 24 - i) * HOUR for i in range(7 * 24)]
    index = 0 if quantity is Quantity.ENERGY_IMPORT else 1
    for previous, row in itertools.pairwise(rows):
        hour_kwh = GRID.energy_kwh(row.start, row.start + HOUR, 10.0)[index]
        assert row.sum - previous.sum == pytest.approx(hour_kwh, abs=1e-9)
        assert row.state == pytest.approx(FIRST_KWH + row.sum, abs=1e-9)  # the meter reading at the hour's end
    assert rows[-1].sum <= 0  # sums count towards the recorder's zero point


@pytest.mark.parametrize("quantity", [Quantity.ENERGY_IMPORT, Quantity.ENERGY_EXPORT])
def test_the_hour_the_live_data_starts_in_charts_the_whole_hour(quantity: Quantity) -> None:
    rows = backfill_rows(GRID, quantity, FIRST_TS, FIRST_KWH, days=1, step_s=10.0)
    index = 0 if quantity is Quantity.ENERGY_IMPORT else 1
    current_hour = FIRST_TS - FIRST_TS % HOUR
    # what the recorder compiles for that hour: the live meter's increase since its zero point
    compiled_sum = GRID.energy_kwh(FIRST_TS, current_hour + HOUR, 10.0)[index]
    whole_hour = GRID.energy_kwh(current_hour, current_hour + HOUR, 10.0)[index]
    assert compiled_sum - rows[-1].sum == pytest.approx(whole_hour, abs=1e-9)


def test_the_week_looks_like_a_household() -> None:
    rows = backfill_rows(GRID, Quantity.ENERGY_IMPORT, FIRST_TS, FIRST_KWH, days=7, step_s=10.0)
    daily = -rows[0].sum / 7
    assert 10 < daily < 60  # house + heat pump + EV, less what the sun covers
    hours = [b.sum - a.sum for a, b in itertools.pairwise(rows)]
    assert min(hours) >= 0
    assert max(hours) > 3  # the EV's evening charge
