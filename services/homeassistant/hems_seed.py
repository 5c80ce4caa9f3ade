"""Seed Home Assistant's /config from the files the HEMS release owns.

First boot: every shipped file is copied. Later boots: a shipped file is updated only when the
copy in /config is still exactly what we installed (its hash is in the manifest); a file the
householder edited, or one we did not install, is never touched. Also pre-seeds the MQTT
integration (broker, user `homeassistant`, the password the mqtt service generated) into a fresh
/config, so Home Assistant talks to the broker without anyone typing a password, and the Energy
dashboard's preferences wired to the bridge's entities when the householder has none.

Standard library only: runs under the Home Assistant image's Python and natively in tests.
Settings (environment): HEMS_SEED_SOURCE, HA_CONFIG_DIR, MQTT_HOMEASSISTANT_PASSWORD,
MQTT_PASSWORD_FILE, HA_MQTT_BROKER, HA_MQTT_PORT.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from pathlib import Path

MANIFEST = ".hems/manifest.json"


def log(message: str) -> None:
    """One line on stderr (the container log)."""
    print(f"homeassistant-seed: {message}", file=sys.stderr)


def digest(path: Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` via a temporary file and rename (no half-written config)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.hems-tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


def seed_files(source: Path, config: Path) -> dict[str, str]:
    """Install or update the owned files; returns what happened to each (relative path -> action)."""
    manifest_path = config / MANIFEST
    manifest: dict[str, str] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    actions: dict[str, str] = {}
    for src in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = src.relative_to(source).as_posix()
        dst = config / rel
        shipped = digest(src)
        if not dst.exists():
            atomic_write(dst, src.read_bytes())
            manifest[rel] = shipped
            actions[rel] = "installed"
        elif rel not in manifest:
            actions[rel] = "kept (not installed by the release)"
        elif digest(dst) != manifest[rel]:
            actions[rel] = "kept (edited in /config)"
        elif shipped != manifest[rel]:
            atomic_write(dst, src.read_bytes())
            manifest[rel] = shipped
            actions[rel] = "updated"
        else:
            actions[rel] = "unchanged"
    atomic_write(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(), 0o600)
    return actions


def mqtt_password() -> str | None:
    """The homeassistant user's MQTT password: the device variable, else the broker's file."""
    override = os.environ.get("MQTT_HOMEASSISTANT_PASSWORD")
    if override:
        return override
    path = Path(os.environ.get("MQTT_PASSWORD_FILE", "/run/hems/mqtt/password"))
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def seed_mqtt_entry(config: Path, password: str) -> bool:
    """Pre-seed the MQTT config entry into a fresh /config; False when HA already has entries.

    Written in the oldest storage layout (version 1, minor 1), which Home Assistant migrates
    forward on load, so one file suits every release.
    """
    entries = config / ".storage" / "core.config_entries"
    if entries.exists():
        return False
    entry = {
        "entry_id": uuid.uuid4().hex,
        "version": 1,
        "domain": "mqtt",
        "title": os.environ.get("HA_MQTT_BROKER", "127.0.0.1"),
        "data": {
            "broker": os.environ.get("HA_MQTT_BROKER", "127.0.0.1"),
            "port": int(os.environ.get("HA_MQTT_PORT", "1883")),
            "username": "homeassistant",
            "password": password,
        },
        "options": {},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "unique_id": None,
        "disabled_by": None,
    }
    document = {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": [entry]}}
    atomic_write(entries, (json.dumps(document, indent=2) + "\n").encode(), 0o600)
    return True


#: The bridge's entities the Energy dashboard starts with (ids: sensor.hems_<meter>_<quantity>).
GRID_IMPORT = "sensor.hems_grid_energy_import"
GRID_EXPORT = "sensor.hems_grid_energy_export"
SOLAR = "sensor.hems_solar_energy_export"
DEVICES = ("sensor.hems_heat_pump_energy_import", "sensor.hems_ev_energy_import")


def energy_prefs() -> dict[str, object]:
    """The Energy dashboard preferences: grid import/export, solar production, two devices.

    Every price key is present as null and the grid has `cost_adjustment_day`: Home Assistant
    2024.3's schema for these preferences requires them (no tariff is known at first boot).
    """
    grid = {
        "type": "grid",
        "flow_from": [
            {
                "stat_energy_from": GRID_IMPORT,
                "stat_cost": None,
                "entity_energy_price": None,
                "number_energy_price": None,
            }
        ],
        "flow_to": [
            {
                "stat_energy_to": GRID_EXPORT,
                "stat_compensation": None,
                "entity_energy_price": None,
                "number_energy_price": None,
            }
        ],
        "cost_adjustment_day": 0.0,
    }
    solar = {"type": "solar", "stat_energy_from": SOLAR, "config_entry_solar_forecast": None}
    return {
        "energy_sources": [grid, solar],
        "device_consumption": [{"stat_consumption": entity} for entity in DEVICES],
    }


def seed_energy_prefs(config: Path) -> bool:
    """Write the Energy dashboard preferences when there are none; False when HA already has them."""
    path = config / ".storage" / "energy"
    if path.exists():
        return False
    document = {"version": 1, "minor_version": 1, "key": "energy", "data": energy_prefs()}
    atomic_write(path, (json.dumps(document, indent=2) + "\n").encode(), 0o600)
    return True


def main() -> int:
    """Seed files, then the MQTT entry; exit 1 when the shipped files are missing."""
    source = Path(os.environ.get("HEMS_SEED_SOURCE", "/usr/share/hems/ha-config"))
    config = Path(os.environ.get("HA_CONFIG_DIR", "/config"))
    if not source.is_dir():
        log(f"no shipped configuration at {source}")
        return 1
    for rel, action in seed_files(source, config).items():
        log(f"{rel}: {action}")
    password = mqtt_password()
    if password is None:
        log("no MQTT password yet: add the MQTT integration by hand or restart after mqtt is up")
    elif seed_mqtt_entry(config, password):
        log("pre-seeded the MQTT integration (user homeassistant)")
    if seed_energy_prefs(config):
        log("pre-wired the Energy dashboard to the bridge's grid, solar and device meters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
