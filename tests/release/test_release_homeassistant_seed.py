"""The homeassistant image's seeding of /config (hems_seed.py, run natively with the system
Python as the image would): first boot installs, later boots update only files we own and the
householder has not edited; HA's stored HTTP settings, the MQTT and InfluxDB config entries are
created and kept up to date with the broker's password and influx-provision's token; no Energy
preferences (the hems integration's).
tests/integration/test_ha_release_config.py runs the result in the pinned Home Assistant."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.release import REPO

SEED = REPO / "services" / "homeassistant" / "hems_seed.py"


def seed_env(source: Path, config: Path, **variables: str) -> dict[str, str]:
    """The seeder's environment as the image sets it, with no secret files unless given."""
    return {
        "PATH": os.environ["PATH"],
        "HEMS_SEED_SOURCE": str(source),
        "HA_CONFIG_DIR": str(config),
        "MQTT_PASSWORD_FILE": str(config.parent / "no-such-file"),
        "INFLUXDB_TOKEN_FILE": str(config.parent / "no-such-token"),
        **variables,
    }


def seed(source: Path, config: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run the seeder as the image does (its own interpreter, environment only)."""
    env = seed_env(source, config, **variables)
    return subprocess.run([sys.executable, str(SEED), *args], env=env, capture_output=True, text=True, timeout=60)


def entries(config: Path) -> dict[str, dict[str, Any]]:
    """HA's stored config entries, by domain."""
    document = json.loads((config / ".storage" / "core.config_entries").read_text())
    assert document["key"] == "core.config_entries"
    return {entry["domain"]: entry for entry in document["data"]["entries"]}


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
        # the hems integration (issue 26): the Energy dashboard follows the meters' roles
        "custom_components/hems/__init__.py",
        "custom_components/hems/dashboard.py",
        "custom_components/hems/energy_prefs.py",
        "custom_components/hems/manifest.json",
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


def test_mqtt_entry_follows_the_broker_password(tmp_path: Path, source: Path) -> None:
    config = tmp_path / "config"
    password_file = tmp_path / "mqtt" / "password"
    password_file.parent.mkdir()
    password_file.write_text("generated-by-mqtt-0123456789")
    result = seed(source, config, MQTT_PASSWORD_FILE=str(password_file))
    assert result.returncode == 0
    entries_file = config / ".storage" / "core.config_entries"
    entry = entries(config)["mqtt"]
    assert entry["data"] == {
        "broker": "127.0.0.1",
        "port": 1883,
        "username": "homeassistant",
        "password": "generated-by-mqtt-0123456789",
    }
    assert oct(entries_file.stat().st_mode & 0o777) == "0o600"
    assert "generated-by-mqtt" not in result.stderr
    # HA rewrites the entry (migrated, a broker changed in the UI); the password is rotated:
    # only the password changes, every key HA or the householder wrote stays.
    document = json.loads(entries_file.read_text())
    document["minor_version"] = 5
    document["data"]["entries"][0].update(version=2, options={"discovery": True})
    document["data"]["entries"][0]["data"].update(broker="192.0.2.10", protocol="5")
    entries_file.write_text(json.dumps(document))
    password_file.write_text("rotated-by-mqtt-0123456789")
    result = seed(source, config, MQTT_PASSWORD_FILE=str(password_file))
    assert "MQTT integration (user homeassistant): updated" in result.stderr
    entry = entries(config)["mqtt"]
    assert entry["data"]["password"] == "rotated-by-mqtt-0123456789"
    assert entry["data"]["broker"] == "192.0.2.10"
    assert (entry["version"], entry["options"]) == (2, {"discovery": True})
    assert (
        "MQTT integration (user homeassistant): unchanged"
        in seed(source, config, MQTT_PASSWORD_FILE=str(password_file)).stderr
    )


def test_seeding_waits_for_a_broker_that_starts_later(tmp_path: Path, source: Path) -> None:
    """First boot in any order: the broker's password appears while the seeder waits."""
    config = tmp_path / "config"
    password_file = tmp_path / "mqtt" / "password"
    env = seed_env(source, config, MQTT_PASSWORD_FILE=str(password_file))
    log = tmp_path / "seeder.log"
    with log.open("w") as sink:
        seeder = subprocess.Popen([sys.executable, str(SEED), "--wait", "30"], env=env, stderr=sink, text=True)
    # the password appears once the seeder says it waits (a slow start on a loaded machine would
    # otherwise find it already there); 60 s is a hang bound only
    deadline = time.monotonic() + 60
    while "waiting up to 30 s for the MQTT password" not in log.read_text():
        assert seeder.poll() is None, f"the seeder gave up before the broker wrote its password: {log.read_text()}"
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    password_file.parent.mkdir()
    password_file.write_text("late-password-0123456789")
    seeder.wait(timeout=60)
    stderr = log.read_text()
    assert seeder.returncode == 0, stderr
    assert entries(config)["mqtt"]["data"]["password"] == "late-password-0123456789"


def test_influxdb_entry_exists_before_the_token_and_takes_it_later(tmp_path: Path, source: Path) -> None:
    config = tmp_path / "config"
    token_file = tmp_path / "tokens" / "homeassistant.token"
    assert seed(source, config, INFLUXDB_TOKEN_FILE=str(token_file)).returncode == 0
    entry = entries(config)["influxdb"]
    assert entry["data"] == {
        "api_version": "2",
        "url": "http://127.0.0.1:8086",
        "token": "",
        "organization": "hems",
        "bucket": "homeassistant",
        "verify_ssl": True,
        "ssl_ca_cert": None,
    }
    token_file.parent.mkdir()
    token_file.write_text("scoped-token-from-influx-provision\n")
    result = seed(source, config, INFLUXDB_TOKEN_FILE=str(token_file))
    assert "InfluxDB integration: updated" in result.stderr
    assert entries(config)["influxdb"]["data"]["token"] == "scoped-token-from-influx-provision"
    assert entries(config)["influxdb"]["entry_id"] == entry["entry_id"], "one entry, updated in place"


def test_watcher_restarts_home_assistant_when_a_secret_changes(tmp_path: Path, source: Path) -> None:
    config = tmp_path / "config"
    token_file = tmp_path / "homeassistant.token"
    assert seed(source, config, INFLUXDB_TOKEN_FILE=str(token_file)).returncode == 0
    init = subprocess.Popen(["sleep", "120"])  # stands in for the container's PID 1
    env = seed_env(source, config, INFLUXDB_TOKEN_FILE=str(token_file))
    watcher = subprocess.Popen(
        [sys.executable, str(SEED), "--watch", str(init.pid), "--poll", "0.2"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        assert init.poll() is None, "nothing changed, yet the watcher stopped Home Assistant"
        token_file.write_text("arrived-after-first-boot")
        assert init.wait(timeout=60) == -signal.SIGTERM  # hang bounds only
        _, stderr = watcher.communicate(timeout=60)
        assert "influxdb credentials changed: restarting Home Assistant" in stderr
        # and a watcher whose process is gone ends by itself
        gone = subprocess.run(
            [sys.executable, str(SEED), "--watch", str(init.pid), "--poll", "0.2"], env=env, timeout=60, check=False
        )
        assert gone.returncode == 0
    finally:
        for process in (init, watcher):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_http_settings_are_stored_not_pending(tmp_path: Path, source: Path) -> None:
    config = tmp_path / "config"
    assert seed(source, config).returncode == 0
    document = json.loads((config / ".storage" / "http").read_text())
    # version 1: HA 2026 migrates it to a stable slot, marks the YAML migration done (no `http:` in
    # YAML) and so has nothing pending to revert 5 minutes later
    assert (document["version"], document["key"]) == (1, "http")
    assert document["data"] == {
        "server_host": ["127.0.0.1"],
        "server_port": 8123,
        "use_x_forwarded_for": True,
        "trusted_proxies": ["127.0.0.1", "::1"],
    }
    # an install upgraded from a release with YAML `http:`: HA 2026 reverted the trial and left
    # its defaults (all addresses, no proxy) as stable. Ours go back in; other keys stay.
    stable = {"server_port": 8123, "cors_allowed_origins": ["https://cast.home-assistant.io"], "ip_ban_enabled": True}
    reverted = {"version": 2, "minor_version": 2, "key": "http", "data": {"stable": stable, "pending": None}}
    reverted["data"]["yaml_migration_done"] = True
    (config / ".storage" / "http").write_text(json.dumps(reverted))
    result = seed(source, config)
    assert "HTTP settings (loopback only, behind nginx): updated" in result.stderr
    data = json.loads((config / ".storage" / "http").read_text())["data"]
    assert data["pending"] is None
    assert data["yaml_migration_done"] is True
    assert data["stable"]["server_host"] == ["127.0.0.1"]
    assert data["stable"]["trusted_proxies"] == ["127.0.0.1", "::1"]
    assert data["stable"]["use_x_forwarded_for"] is True
    assert data["stable"]["cors_allowed_origins"] == ["https://cast.home-assistant.io"]


def test_shipped_yaml_is_valid() -> None:
    class Loader(yaml.SafeLoader):
        """YAML with Home Assistant's !include_dir_named tag."""

    Loader.add_constructor("!include_dir_named", lambda loader, node: loader.construct_scalar(node))
    config = yaml.load((REPO / "ha-config" / "configuration.yaml").read_text(), Loader=Loader)  # noqa: S506
    assert config["homeassistant"]["packages"] == "packages"
    for package in (REPO / "ha-config" / "packages").glob("*.yaml"):
        document = yaml.safe_load(package.read_text())
        # HA 2026: YAML `http:` is a trial that reverts after 5 minutes; InfluxDB connection keys
        # in YAML are imported once (and raise a repair): both live in HA's store instead
        assert "http" not in document, package.name
        assert not {"host", "token", "api_version", "bucket"} & set(document.get("influxdb", {})), package.name
    hems = yaml.safe_load((REPO / "ha-config" / "packages" / "hems.yaml").read_text())
    assert hems["recorder"]["commit_interval"] > 5


def test_energy_preferences_are_left_to_the_hems_integration(tmp_path: Path, source: Path) -> None:
    """No fixed meters in a new home's Energy dashboard: the hems integration wires it from the roles
    (tests/integration/test_release_seed_roles.py), and the seed never touches the householder's."""
    config = tmp_path / "config"
    result = seed(source, config)
    assert result.returncode == 0, result.stderr
    assert not (config / ".storage" / "energy").exists()
    mine = '{"version": 1, "key": "energy", "data": {"energy_sources": [], "device_consumption": []}}'
    (config / ".storage" / "energy").write_text(mine)
    assert seed(source, config).returncode == 0
    assert (config / ".storage" / "energy").read_text() == mine
