"""The homeassistant image's seeding of /config (hems_seed.py, run natively with the system
Python as the image would): first boot installs, later boots update only files we own and the
householder has not edited; the MQTT integration is pre-seeded with the broker's password."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.release import REPO

SEED = REPO / "services" / "homeassistant" / "hems_seed.py"


def seed(source: Path, config: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run the seeder as the image does (its own interpreter, environment only)."""
    env = {
        "PATH": os.environ["PATH"],
        "HEMS_SEED_SOURCE": str(source),
        "HA_CONFIG_DIR": str(config),
        "MQTT_PASSWORD_FILE": str(config.parent / "no-such-file"),
        **variables,
    }
    return subprocess.run([sys.executable, str(SEED)], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of the repository's ha-config/ (tests change it to simulate a new release)."""
    return Path(shutil.copytree(REPO / "ha-config", tmp_path / "shipped"))


def test_first_boot_installs_everything(tmp_path: Path, source: Path) -> None:
    config = tmp_path / "config"
    result = seed(source, config)
    assert result.returncode == 0, result.stderr
    for path in source.rglob("*"):
        if path.is_file():
            assert (config / path.relative_to(source)).read_bytes() == path.read_bytes()
    manifest = json.loads((config / ".hems" / "manifest.json").read_text())
    assert set(manifest) == {
        "configuration.yaml",
        "packages/hems.yaml",
        "packages/influxdb.yaml",
        "dashboards/hems.yaml",
    }


def test_new_release_updates_untouched_files_only(tmp_path: Path, source: Path) -> None:
    config = tmp_path / "config"
    assert seed(source, config).returncode == 0
    # the householder edits the package; a new release changes both files
    edited = (config / "packages" / "hems.yaml").read_text() + "\n# my tweak\n"
    (config / "packages" / "hems.yaml").write_text(edited)
    (source / "configuration.yaml").write_text((source / "configuration.yaml").read_text() + "\n# release 2\n")
    (source / "packages" / "hems.yaml").write_text("recorder:\n  commit_interval: 60\n")
    result = seed(source, config)
    assert result.returncode == 0
    assert (config / "configuration.yaml").read_text().endswith("# release 2\n"), "untouched file updated"
    assert (config / "packages" / "hems.yaml").read_text() == edited, "the householder's edit is kept"
    assert "packages/hems.yaml: kept (edited in /config)" in result.stderr
    assert "configuration.yaml: updated" in result.stderr
    # and stays kept on the next boot too
    assert seed(source, config).returncode == 0
    assert (config / "packages" / "hems.yaml").read_text() == edited


def test_existing_config_is_never_overwritten(tmp_path: Path, source: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "configuration.yaml").write_text("homeassistant:\n  name: Mine\n")
    result = seed(source, config)
    assert result.returncode == 0
    assert (config / "configuration.yaml").read_text() == "homeassistant:\n  name: Mine\n"
    assert "configuration.yaml: kept (not installed by the release)" in result.stderr
    assert (config / "packages" / "hems.yaml").exists()


def test_mqtt_entry_seeded_once_with_the_broker_password(tmp_path: Path, source: Path) -> None:
    config = tmp_path / "config"
    password_file = tmp_path / "mqtt" / "password"
    password_file.parent.mkdir()
    password_file.write_text("generated-by-mqtt-0123456789")
    result = seed(source, config, MQTT_PASSWORD_FILE=str(password_file))
    assert result.returncode == 0
    entries_file = config / ".storage" / "core.config_entries"
    document: dict[str, Any] = json.loads(entries_file.read_text())
    assert document["key"] == "core.config_entries"
    (entry,) = document["data"]["entries"]
    assert entry["domain"] == "mqtt"
    assert entry["data"] == {
        "broker": "127.0.0.1",
        "port": 1883,
        "username": "homeassistant",
        "password": "generated-by-mqtt-0123456789",
    }
    assert oct(entries_file.stat().st_mode & 0o777) == "0o600"
    assert "generated-by-mqtt" not in result.stderr
    # Home Assistant owns the file from then on
    entries_file.write_text('{"version": 1, "minor_version": 5, "key": "core.config_entries", "data": {"entries": []}}')
    assert seed(source, config, MQTT_HOMEASSISTANT_PASSWORD="override-password-1").returncode == 0
    assert json.loads(entries_file.read_text())["data"]["entries"] == []


def test_shipped_yaml_is_valid() -> None:
    class Loader(yaml.SafeLoader):
        """YAML with Home Assistant's !include_dir_named tag."""

    Loader.add_constructor("!include_dir_named", lambda loader, node: loader.construct_scalar(node))
    config = yaml.load((REPO / "ha-config" / "configuration.yaml").read_text(), Loader=Loader)  # noqa: S506
    assert config["homeassistant"]["packages"] == "packages"
    package = yaml.safe_load((REPO / "ha-config" / "packages" / "hems.yaml").read_text())
    assert "127.0.0.1" in package["http"]["trusted_proxies"]
    assert package["recorder"]["commit_interval"] > 5


def test_energy_dashboard_seeded_only_when_the_householder_has_none(tmp_path: Path, source: Path) -> None:
    config = tmp_path / "config"
    assert seed(source, config).returncode == 0
    energy = config / ".storage" / "energy"
    document: dict[str, Any] = json.loads(energy.read_text())
    assert document["key"] == "energy"
    grid, solar = document["data"]["energy_sources"]
    assert grid["flow_from"][0]["stat_energy_from"] == "sensor.hems_grid_energy_import"
    assert grid["flow_to"][0]["stat_energy_to"] == "sensor.hems_grid_energy_export"
    assert solar == {
        "type": "solar",
        "stat_energy_from": "sensor.hems_solar_energy_export",
        "config_entry_solar_forecast": None,
    }
    # the householder's own choice (here: nothing at all) is never overwritten
    mine = '{"version": 1, "key": "energy", "data": {"energy_sources": [], "device_consumption": []}}'
    energy.write_text(mine)
    result = seed(source, config)
    assert result.returncode == 0
    assert energy.read_text() == mine
    assert "Energy dashboard" not in result.stderr
