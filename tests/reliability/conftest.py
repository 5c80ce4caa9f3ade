"""Fixtures of the reliability tests (chaos, fuzzing, attack surface); see docs/reliability.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.victoria import Victoria


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[Victoria]:
    """A VictoriaMetrics of this test's own (the InfluxDB v2 write peer), started."""
    instance = Victoria(tmp_path / "vm")
    instance.start()
    yield instance
    instance.stop()
