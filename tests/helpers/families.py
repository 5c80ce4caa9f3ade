"""What the tests derive from the family table (`meterbridge.families`): fixture cases and fuzz targets.

Reads `SOURCE_FAMILIES` at call time, so a family added to the table (as the toy family of
`tests/unit/test_families.py` is) shows up here with nothing else to edit.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from meterbridge import families
from meterbridge.families import RawParser, SourceFamily

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

#: A fuzz target: makes a fresh raw parser; the seed corpus.
FuzzTarget = tuple[Callable[[], RawParser], Callable[[], list[bytes]]]


def fixture_inputs(family: SourceFamily, root: Path = FIXTURES) -> list[Path]:
    """The family's fixture inputs (its glob, minus the expectations written beside them)."""
    if family.fixtures is None:
        return []
    return sorted(p for p in root.glob(family.fixtures) if not p.name.endswith(".expected.json"))


def fixture_cases(root: Path = FIXTURES) -> list[tuple[SourceFamily, Path]]:
    """Every (family, input) of every family in the table."""
    return [(family, path) for family in families.SOURCE_FAMILIES for path in fixture_inputs(family, root)]


def fixture_checker(family: SourceFamily, root: Path = FIXTURES) -> Callable[[Path], None]:
    """`check(path)` from the family's `tests/fixtures/<folder>/check.py`."""
    assert family.fixtures is not None
    path = root / family.fixtures.split("/")[0] / "check.py"
    spec = importlib.util.spec_from_file_location(f"fixture_check_{family.type}", path)
    assert spec is not None, path
    assert spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    check: Callable[[Path], None] = module.check
    return check


def fuzz_targets(root: Path = FIXTURES) -> dict[str, FuzzTarget]:
    """One target per family with a raw parser, seeded with its fixture inputs."""
    return {
        family.type: (family.parser, lambda family=family: [p.read_bytes() for p in fixture_inputs(family, root)])
        for family in families.SOURCE_FAMILIES
        if family.parser is not None
    }
