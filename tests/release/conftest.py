"""Fixtures of the release tests: the repository's compose/balena files and the mqtt
entrypoint's broker (see helpers.release)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from helpers.release import REPO, Volumes


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def balena_yml() -> dict[str, Any]:
    """balena.yml, parsed."""
    data = yaml.safe_load((REPO / "balena.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture
def volumes() -> Iterator[Volumes]:
    """Fresh named volumes for one test (root:root 0755, as the engine makes them)."""
    yield from Volumes.temporary()
