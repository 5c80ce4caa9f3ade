"""Every recorded or documented payload under `tests/fixtures/<family>/` gives what is written beside it.

One walk over the family table (`meterbridge.families`): adding a device is adding its input
and its expectations; adding a family is its table line plus its folder with a `check.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.families import fixture_cases, fixture_checker
from meterbridge.families import SOURCE_FAMILIES, SourceFamily

CASES = fixture_cases()


@pytest.mark.parametrize(("family", "path"), CASES, ids=[f"{f.type}/{p.name}" for f, p in CASES])
def test_fixture(family: SourceFamily, path: Path) -> None:
    fixture_checker(family)(path)


@pytest.mark.parametrize("family", [f for f in SOURCE_FAMILIES if f.fixtures], ids=lambda f: f.type)
def test_every_family_with_fixtures_has_some(family: SourceFamily) -> None:
    """A glob that matches nothing would make the walk above pass by checking nothing."""
    assert any(f is family for f, _ in CASES), family.fixtures
