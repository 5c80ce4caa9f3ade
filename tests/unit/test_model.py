"""The Reading model: fixed units, aware UTC timestamps, finite values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from meterbridge.model import UNITS, Quantity, Reading, Unit

TS = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)


def test_every_quantity_has_one_unit() -> None:
    assert set(UNITS) == set(Quantity)


def test_of_fills_in_the_unit() -> None:
    reading = Reading.of("grid", Quantity.POWER, 512, TS)
    assert reading == Reading("grid", Quantity.POWER, 512.0, Unit.WATT, TS)
    assert isinstance(reading.value, float)


def test_wrong_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="must be in 'W'"):
        Reading("grid", Quantity.POWER, 1.0, Unit.KILOWATT_HOUR, TS)


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Reading.of("grid", Quantity.POWER, 1.0, datetime(2026, 1, 1))


def test_timestamps_are_normalised_to_utc() -> None:
    local = datetime(2026, 11, 21, 21, 0, tzinfo=timezone(timedelta(hours=1)))
    reading = Reading.of("grid", Quantity.POWER, 1.0, local)
    assert reading.ts == TS
    assert reading.ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        Reading.of("grid", Quantity.POWER, value, TS)


def test_totals_cannot_be_negative_but_power_can() -> None:
    with pytest.raises(ValueError, match="total"):
        Reading.of("grid", Quantity.ENERGY_IMPORT, -1.0, TS)
    assert Reading.of("grid", Quantity.POWER, -2500.0, TS).value == -2500.0


def test_readings_are_immutable() -> None:
    reading = Reading.of("grid", Quantity.POWER, 1.0, TS)
    with pytest.raises(AttributeError):
        reading.value = 2.0  # type: ignore[misc]
