"""ha-config/ passes the pinned Home Assistant's own `hass --script check_config`, and that
check does catch a broken package (so a passing run means something)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.homeassistant import HASS, REPO

pytestmark = pytest.mark.homeassistant


def check_config(config: Path, *args: str) -> str:
    """Run check_config on `config`; its output. No network: PIP_NO_INDEX (make setup-ha
    installed every requirement the shipped configuration loads)."""
    if not HASS.exists():
        pytest.skip("Home Assistant is not installed: run make setup-ha")
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    env.pop("INFLUXDB_TOKEN", None)
    result = subprocess.run(
        [str(HASS), "--script", "check_config", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    # check_config exits 0 even for "Incorrect config": the verdict is in the text
    return result.stdout + result.stderr


def test_shipped_config_is_valid(tmp_path: Path) -> None:
    config = Path(shutil.copytree(REPO / "ha-config", tmp_path / "config"))
    output = check_config(config, "--info", "influxdb,recorder,lovelace")
    assert "Failed config" not in output, output
    assert "Incorrect config" not in output, output
    assert "Attempting install" not in output, "a requirement is missing from scripts/setup-ha.sh"
    for expected in (
        "max_retries: 3",
        "sensor.hems_flex_*",
        "commit_interval: 300",
        "auto_repack: False",
        "hems-energy",
    ):
        assert expected in output, output


def test_check_config_catches_a_broken_package(tmp_path: Path) -> None:
    config = Path(shutil.copytree(REPO / "ha-config", tmp_path / "config"))
    package = config / "packages" / "influxdb.yaml"
    package.write_text(package.read_text().replace("max_retries: 3", "max_retries: -3"))
    output = check_config(config)
    assert "Incorrect config" in output or "Failed config" in output, output
