"""Seed Home Assistant's /config from the files the HEMS release owns.

First boot: every shipped file is copied. Later boots: a shipped file is updated only when the
copy in /config is still exactly what we installed (its hash is in the manifest); a file the
householder edited, or one we did not install, is never touched.

Then HA's stored settings that the appliance manages, written while HA is not running:
- the HTTP settings (`.storage/http`): HA 2026 stages YAML `http:` as a trial that reverts after
  5 minutes, so the proxy settings live in the store: listen on loopback only (the LAN reaches HA
  through nginx's TLS), trust nginx's X-Forwarded-For; other keys (a port, CORS) are kept;
- the MQTT integration (broker, user `homeassistant`, the password the mqtt service generated),
  created once and its password updated when the broker's changes;
- the InfluxDB integration as a config entry (HA imports YAML only once, and not at all when
  InfluxDB is down at that boot): created once, its token updated when influx-provision's changes;
  HA retries the entry by itself until InfluxDB answers;
- the Energy dashboard's preferences wired to the bridge's entities, when the householder has none.

`--wait S` waits up to S seconds for the MQTT password before seeding (the broker's container may
start later on first boot); `--watch PID` then polls the secret files and sends SIGTERM to PID when
one differs from what was seeded, so the container restarts and seeds again.

Standard library only: runs under the Home Assistant image's Python and natively in tests.
Settings (environment): HEMS_SEED_SOURCE, HA_CONFIG_DIR, MQTT_HOMEASSISTANT_PASSWORD,
MQTT_PASSWORD_FILE, HA_MQTT_BROKER, HA_MQTT_PORT, HA_HTTP_SERVER_HOST, HA_HTTP_SERVER_PORT,
HA_HTTP_TRUSTED_PROXIES, INFLUXDB_TOKEN_FILE, INFLUXDB_URL, INFLUXDB_ORG,
INFLUXDB_BUCKET.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    return read_secret(Path(os.environ.get("MQTT_PASSWORD_FILE", "/run/hems/mqtt/password")))


def influxdb_token() -> str | None:
    """HA's scoped InfluxDB token: the file influx-provision writes (never a variable)."""
    return read_secret(Path(os.environ.get("INFLUXDB_TOKEN_FILE", "/influx-tokens/homeassistant.token")))


def read_secret(path: Path) -> str | None:
    """A secret file's stripped text; None when it is missing or empty."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def fingerprint(secret: str | None) -> str | None:
    """What we remember of a secret: its hash (the secret itself stays in HA's store only)."""
    return None if secret is None else hashlib.sha256(secret.encode()).hexdigest()


def now_iso() -> str:
    """The current time as HA stores it in config entries."""
    return datetime.now(UTC).isoformat()


# --- HA's stored HTTP settings ----------------------------------------------------------------


def http_settings(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The HTTP settings the appliance manages: loopback only, nginx trusted as the proxy."""
    hosts = env.get("HA_HTTP_SERVER_HOST", "127.0.0.1")
    proxies = env.get("HA_HTTP_TRUSTED_PROXIES", "127.0.0.1,::1")
    return {
        "server_host": [host.strip() for host in hosts.split(",") if host.strip()],
        "server_port": int(env.get("HA_HTTP_SERVER_PORT", "8123")),
        "use_x_forwarded_for": True,
        "trusted_proxies": [proxy.strip() for proxy in proxies.split(",") if proxy.strip()],
    }


def seed_http_settings(config: Path, ours: dict[str, Any] | None = None) -> str:
    """Write our keys into `.storage/http` (every slot HA has); returns installed/updated/unchanged.

    A new store is written in version 1 (what HA 2024.x wrote): HA 2026 migrates it to its
    stable/pending layout and, with no `http:` in YAML, marks the YAML migration done, so nothing
    is left pending and no repair appears. An existing store keeps every other key.
    """
    path = config / ".storage" / "http"
    ours = ours or http_settings()
    if not path.exists():
        document = {"version": 1, "minor_version": 1, "key": "http", "data": ours}
        atomic_write(path, (json.dumps(document, indent=2) + "\n").encode(), 0o600)
        return "installed"
    document = json.loads(path.read_text())
    data = document.get("data") or {}
    if document.get("version", 1) >= 2:
        slots = [data[key] for key in ("stable", "pending") if isinstance(data.get(key), dict)]
    else:
        slots = [data]
    changed = False
    for slot in slots:
        for key, value in ours.items():
            if slot.get(key) != value:
                slot[key] = value
                changed = True
    if not changed:
        return "unchanged"
    document["data"] = data
    atomic_write(path, (json.dumps(document, indent=2) + "\n").encode(), 0o600)
    return "updated"


# --- config entries (MQTT, InfluxDB) ----------------------------------------------------------


def new_entry(domain: str, title: str, data: dict[str, Any]) -> dict[str, Any]:
    """A config entry with every key HA's store has had up to 2026 (version 1.5 of the store).

    Entries are written at version 1.1 of their integration: HA migrates them forward on load
    (MQTT's becomes 2.1), so one layout suits every release.
    """
    stamp = now_iso()
    return {
        "entry_id": uuid.uuid4().hex,
        "version": 1,
        "minor_version": 1,
        "domain": domain,
        "title": title,
        "data": data,
        "options": {},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "unique_id": None,
        "disabled_by": None,
        "created_at": stamp,
        "modified_at": stamp,
        "discovery_keys": {},
        "subentries": [],
    }


def mqtt_entry_data(password: str) -> dict[str, Any]:
    """The MQTT entry's connection data (what the UI flow would store)."""
    return {
        "broker": os.environ.get("HA_MQTT_BROKER", "127.0.0.1"),
        "port": int(os.environ.get("HA_MQTT_PORT", "1883")),
        "username": "homeassistant",
        "password": password,
    }


def influxdb_entry_data(token: str) -> dict[str, Any]:
    """The InfluxDB entry's connection data, as the integration's own v2 flow stores it.

    What HA sends is filtered in YAML (packages/influxdb.yaml): the integration reads its
    include/exclude options from there even when the connection is a config entry.
    """
    return {
        "api_version": "2",
        "url": os.environ.get("INFLUXDB_URL", "http://127.0.0.1:8086"),
        "token": token,
        "organization": os.environ.get("INFLUXDB_ORG", "hems"),
        "bucket": os.environ.get("INFLUXDB_BUCKET", "homeassistant"),
        "verify_ssl": True,
        "ssl_ca_cert": None,
    }


def seed_entry(config: Path, domain: str, title: str, data: dict[str, Any], owned: tuple[str, ...]) -> str:
    """Create the `domain` entry, or update its `owned` data keys; returns created/updated/unchanged.

    Only the keys the appliance manages are rewritten (a broker the householder changed in the
    UI is theirs: `owned` is the secret alone there); every other entry and key is left as HA
    wrote it.
    """
    path = config / ".storage" / "core.config_entries"
    if path.exists():
        document = json.loads(path.read_text())
    else:
        document = {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": []}}
    entries: list[dict[str, Any]] = document["data"]["entries"]
    mine = next((entry for entry in entries if entry.get("domain") == domain), None)
    if mine is None:
        entries.append(new_entry(domain, title, data))
        action = "created"
    else:
        changes = {key: data[key] for key in owned if mine["data"].get(key) != data[key]}
        if not changes:
            return "unchanged"
        mine["data"] = {**mine["data"], **changes}
        if "modified_at" in mine:
            mine["modified_at"] = now_iso()
        action = "updated"
    atomic_write(path, (json.dumps(document, indent=2) + "\n").encode(), 0o600)
    return action


def seed_mqtt_entry(config: Path, password: str) -> str:
    """The MQTT integration, connected to the appliance's broker as user `homeassistant`."""
    data = mqtt_entry_data(password)
    return seed_entry(config, "mqtt", data["broker"], data, owned=("password",))


def seed_influxdb_entry(config: Path, token: str) -> str:
    """The InfluxDB integration, writing to the local InfluxDB's `homeassistant` bucket."""
    data = influxdb_entry_data(token)
    return seed_entry(config, "influxdb", f"{data['bucket']} ({data['url']})", data, owned=("token",))


#: The bridge's entities the Energy dashboard starts with (ids: sensor.hems_<meter>_<quantity>;
#: tests/integration/test_ha_release_config.py checks each exists in the pinned HA). Power is the
#: recorded companion `..._power_average` (the step's mean): the live `..._power` is left out of
#: the recorder (packages/hems.yaml), and HA's power charts and `energy/validate` need statistics.
GRID_IMPORT = "sensor.hems_grid_energy_import"
GRID_EXPORT = "sensor.hems_grid_energy_export"
GRID_POWER = "sensor.hems_grid_power_average"
SOLAR = "sensor.hems_solar_energy_export"
DEVICES = (
    ("sensor.hems_heat_pump_energy_import", "sensor.hems_heat_pump_power_average"),
    ("sensor.hems_ev_energy_import", "sensor.hems_ev_power_average"),
)
#: A live power id of the bridge (`sensor.hems_<meter>_power`), which earlier releases put in the
#: Energy preferences and which the recorder no longer keeps.
LIVE_POWER = re.compile(r"sensor\.hems_[a-z0-9_]+_power")

#: The Energy preferences store as the pinned HA writes it (energy/data.py STORAGE_VERSION 1,
#: STORAGE_MINOR_VERSION 3: one "unified" grid source instead of flow_from/flow_to lists).
ENERGY_STORE = {"version": 1, "minor_version": 3, "key": "energy"}


def energy_prefs() -> dict[str, object]:
    """The Energy dashboard preferences: grid import/export and power, solar, two devices.

    No tariff is known at first boot, so every price is null. The grid's `stat_rate` is the
    bridge's grid power, whose sign is HA's: positive importing, negative exporting.
    """
    grid = {
        "type": "grid",
        "stat_energy_from": GRID_IMPORT,
        "stat_energy_to": GRID_EXPORT,
        "stat_cost": None,
        "entity_energy_price": None,
        "number_energy_price": None,
        "stat_compensation": None,
        "entity_energy_price_export": None,
        "number_energy_price_export": None,
        "stat_rate": GRID_POWER,
        "cost_adjustment_day": 0.0,
    }
    solar = {"type": "solar", "stat_energy_from": SOLAR, "config_entry_solar_forecast": None}
    return {
        "energy_sources": [grid, solar],
        "device_consumption": [{"stat_consumption": energy, "stat_rate": power} for energy, power in DEVICES],
        # optional in HA's schema, but the 2026.10 Energy panel maps over it and spins forever
        # without it (TypeError in getReferencedStatisticIdsPower)
        "device_consumption_water": [],
    }


def recorded_power_rates(node: object) -> int:
    """Point every `stat_rate*` naming a live bridge power at its recorded companion, in place; how many."""
    changed = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith("stat_rate") and isinstance(value, str) and LIVE_POWER.fullmatch(value):
                node[key] = f"{value}_average"
                changed += 1
            else:
                changed += recorded_power_rates(value)
    elif isinstance(node, list):
        changed += sum(recorded_power_rates(item) for item in node)
    return changed


def seed_energy_prefs(config: Path) -> bool:
    """Write the Energy dashboard preferences when there are none; False when HA already has them.

    Existing preferences keep the householder's choices; only a power of the bridge's that the
    recorder no longer keeps (`sensor.hems_<meter>_power`) moves to its recorded companion.
    """
    path = config / ".storage" / "energy"
    if path.exists():
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            log(f"{path}: unreadable ({err}); left alone")
            return False
        if isinstance(document, dict) and (moved := recorded_power_rates(document.get("data"))):
            atomic_write(path, (json.dumps(document, indent=2) + "\n").encode(), 0o600)
            log(f"Energy dashboard: {moved} power sensor(s) moved to their recorded average")
        return False
    document = {**ENERGY_STORE, "data": energy_prefs()}
    atomic_write(path, (json.dumps(document, indent=2) + "\n").encode(), 0o600)
    return True


SEEDED_SECRETS = ".hems/secrets.json"


def secret_fingerprints() -> dict[str, str | None]:
    """The current secrets' fingerprints, by name."""
    return {"mqtt": fingerprint(mqtt_password()), "influxdb": fingerprint(influxdb_token())}


def wait_for_mqtt_password(wait_s: float, poll_s: float = 1.0) -> None:
    """Wait up to `wait_s` for the broker's password file (first boot: mqtt may start later)."""
    deadline = time.monotonic() + wait_s
    if mqtt_password() is None and wait_s > 0:
        log(f"waiting up to {wait_s:.0f} s for the MQTT password")
    while mqtt_password() is None and time.monotonic() < deadline:
        time.sleep(poll_s)


def seed(source: Path, config: Path) -> int:
    """Seed files, HTTP settings, integrations and Energy preferences; 1 when nothing is shipped."""
    if not source.is_dir():
        log(f"no shipped configuration at {source}")
        return 1
    for rel, action in seed_files(source, config).items():
        log(f"{rel}: {action}")
    log(f"HTTP settings (loopback only, behind nginx): {seed_http_settings(config)}")
    password = mqtt_password()
    if password is None:
        log("no MQTT password yet: the MQTT integration is set up when the broker has made one")
    else:
        log(f"MQTT integration (user homeassistant): {seed_mqtt_entry(config, password)}")
    # Created without a token too: HA then retries the entry (not ready) instead of importing the
    # YAML once and giving up; --watch restarts HA when influx-provision writes the token.
    log(f"InfluxDB integration: {seed_influxdb_entry(config, influxdb_token() or '')}")
    if seed_energy_prefs(config):
        log("pre-wired the Energy dashboard to the bridge's grid, solar and device meters")
    atomic_write(config / SEEDED_SECRETS, (json.dumps(secret_fingerprints()) + "\n").encode(), 0o600)
    return 0


def watch(config: Path, pid: int, poll_s: float) -> int:
    """SIGTERM `pid` once a secret differs from what was seeded (the container then seeds again)."""
    try:
        seeded = json.loads((config / SEEDED_SECRETS).read_text())
    except (OSError, ValueError):
        seeded = {}
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return 0  # what we watch for is gone (natively: HA stopped); never signal a reused PID
        current = secret_fingerprints()
        changed = sorted(name for name, value in current.items() if value is not None and value != seeded.get(name))
        if changed:
            log(f"{', '.join(changed)} credentials changed: restarting Home Assistant to apply them")
            os.kill(pid, signal.SIGTERM)
            return 0
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    """Seed /config (after waiting for the broker's password), or watch the secrets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait", type=float, default=0.0, metavar="S", help="wait up to S s for the MQTT password")
    parser.add_argument("--watch", type=int, metavar="PID", help="SIGTERM PID when a secret changes")
    parser.add_argument("--poll", type=float, default=30.0, metavar="S", help="--watch: seconds between checks")
    args = parser.parse_args(argv)
    source = Path(os.environ.get("HEMS_SEED_SOURCE", "/usr/share/hems/ha-config"))
    config = Path(os.environ.get("HA_CONFIG_DIR", "/config"))
    if args.watch is not None:
        return watch(config, args.watch, args.poll)
    wait_for_mqtt_password(args.wait)
    return seed(source, config)


if __name__ == "__main__":
    sys.exit(main())
