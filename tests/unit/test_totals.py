"""The rule for totals that go backwards (`TotalGuard`)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterbridge.model import Quantity, Reading
from meterbridge.sources.totals import TotalGuard, TotalVerdict

T0 = datetime(2026, 11, 21, tzinfo=UTC)


def _r(value: float, quantity: Quantity = Quantity.ENERGY_IMPORT, meter: str = "m", i: int = 0) -> Reading:
    return Reading.of(meter, quantity, value, T0 + timedelta(seconds=i))


def _verdicts(values: list[float], **kwargs: float) -> list[TotalVerdict]:
    guard = TotalGuard(**kwargs)  # type: ignore[arg-type]
    return [guard.check(_r(v, i=i)) for i, v in enumerate(values)]


A, S, P, R = TotalVerdict.ACCEPTED, TotalVerdict.STEP_BACK, TotalVerdict.RESET_PENDING, TotalVerdict.RESET


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([10.0, 10.5, 10.5, 11.0], [A, A, A, A]),
        ([100.0, 99.99, 100.0, 100.2], [A, S, A, A]),  # a small step back is ignored
        ([100.0, 95.0, 99.0, 101.0], [A, S, S, A]),  # ... until the meter climbs past the old total
        ([100.0, 0.0, 100.1], [A, P, A]),  # a lone drop to 0 was a glitch: no reset
        ([100.0, 0.0, 95.0, 101.0], [A, P, S, A]),  # back near the old total: a glitch too
        ([100.0, 0.0, 0.01, 0.02], [A, P, R, A]),  # a real reset counts up from its low: accepted
        ([100.0, 5.0, 3.0, 3.1], [A, P, P, R]),  # a candidate lower than the last restarts the count
        ([0.0, 0.0, 0.001], [A, A, A]),
    ],
)
def test_rule(values: list[float], expected: list[TotalVerdict]) -> None:
    assert _verdicts(values) == expected


def test_non_totals_pass_and_meters_are_separate() -> None:
    guard = TotalGuard()
    assert guard.check(_r(500.0, Quantity.POWER)) is A
    assert guard.check(_r(-500.0, Quantity.POWER)) is A
    assert guard.check(_r(10.0, meter="a")) is A
    assert guard.check(_r(1.0, meter="b")) is A
    assert guard.check(_r(10.0, Quantity.ENERGY_EXPORT, meter="b")) is A
    assert guard.check(_r(9.99, meter="a")) is S
    guard.forget("a")
    assert guard.check(_r(9.99, meter="a")) is A


def test_filter_keeps_accepted_and_resets() -> None:
    guard = TotalGuard(confirmations=1)
    out = guard.filter([_r(10.0), _r(1.0, Quantity.POWER), _r(9.95, i=1), _r(0.5, i=2)])
    assert [r.value for r in out.readings] == [10.0, 1.0, 0.5]
    assert [v for _, v in out.notes] == [S, R]


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="reset_fraction"):
        TotalGuard(reset_fraction=1.0)
    with pytest.raises(ValueError, match="confirmations"):
        TotalGuard(confirmations=0)


@given(st.lists(st.floats(min_value=0, max_value=1e7, allow_nan=False), min_size=1, max_size=40))
def test_what_passes_never_shows_ha_a_bogus_drop(values: list[float]) -> None:
    """Home Assistant sees a total fall only when it fell below 90 % and a second reading confirmed it."""
    guard = TotalGuard()
    passed: list[float] = []
    for i, value in enumerate(values):
        out = guard.filter([_r(value, i=i)])
        passed.extend(r.value for r in out.readings)
    for before, after in itertools.pairwise(passed):
        assert after >= before or after < 0.9 * before
    if passed:
        assert guard.last("m", Quantity.ENERGY_IMPORT) == passed[-1]
