"""The HEMS appliance's own integration: the Energy dashboard follows the meters' roles (issue 26).

The bridge publishes every meter's role, name and quantities retained on `hems/meters`
(meterbridge/roles.py). On each document this integration computes the Energy preferences the
roles ask for (energy_prefs.py) and merges them into Home Assistant's through the energy
manager (`homeassistant.components.energy.data.async_get_manager(hass).async_update`), touching
only the entries it added itself and nobody edited since; which those are is kept in its own
store (`.storage/hems.energy`). Zigbee2MQTT's own sensors of the quantities the bridge announces
for a Zigbee device are disabled once (one entity per quantity; the plug's switch stays). A home
with no such document (a bridge whose config names its
meters without `discovery:`) keeps whatever preferences it has.

The HEMS dashboard (`dashboards/hems.yaml`, a YAML dashboard HA reads again when the file
changes) is written from the same document (dashboard.py), only while the file is the one the
release shipped or the one this integration last wrote: a householder's edit is kept.

This integration is the only writer of Energy preferences the release makes: the seeding step
(hems_seed.py) writes none. Earlier releases' seeding wrote fixed ones on first boot (meters
`grid`, `solar`, `heat_pump`, `ev`: `SEEDED`); an entry still exactly as written then counts as
this integration's own on its first run (no `.storage/hems.energy` yet), so an upgraded home
converges to its meters' roles, while an entry the householder edited or added stays theirs.
Power in the preferences is the bridge's recorded `sensor.hems_<meter>_power_average`: a live
`sensor.hems_<meter>_power` (which the recorder no longer keeps) is moved to it wherever it is
named, in the householder's entries too (energy_prefs.recorded_power_rates); `SEEDED` stays what
those releases wrote, and is compared after the same move.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml
from homeassistant.components import mqtt
from homeassistant.components.energy.data import async_get_manager
from homeassistant.core import Event, HomeAssistant
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.storage import Store
from homeassistant.helpers.typing import ConfigType

from .dashboard import hems_dashboard
from .energy_prefs import as_stored, merge, zigbee2mqtt_duplicates

_LOGGER = logging.getLogger(__name__)

DOMAIN = "hems"
CONFIG_SCHEMA = cv.empty_config_schema(DOMAIN)
TOPIC = "hems/meters"
STORE_KEY = "hems.energy"
STORE_VERSION = 1

#: What earlier releases' seeding step wrote into `.storage/energy` (recorded in
#: tests/fixtures/homeassistant/previous-release/storage-energy.json; a test checks they are equal).
_SEEDED_GRID = {
    "type": "grid",
    "stat_energy_from": "sensor.hems_grid_energy_import",
    "stat_energy_to": "sensor.hems_grid_energy_export",
    "stat_cost": None,
    "entity_energy_price": None,
    "number_energy_price": None,
    "stat_compensation": None,
    "entity_energy_price_export": None,
    "number_energy_price_export": None,
    "stat_rate": "sensor.hems_grid_power",
    "cost_adjustment_day": 0.0,
}
SEEDED: dict[str, list[dict[str, Any]]] = {
    "energy_sources": [
        _SEEDED_GRID,
        {"type": "solar", "stat_energy_from": "sensor.hems_solar_energy_export", "config_entry_solar_forecast": None},
    ],
    "device_consumption": [
        {"stat_consumption": "sensor.hems_heat_pump_energy_import", "stat_rate": "sensor.hems_heat_pump_power"},
        {"stat_consumption": "sensor.hems_ev_energy_import", "stat_rate": "sensor.hems_ev_power"},
    ],
}


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Follow the bridge's roles document once MQTT is up."""
    store: Store[dict[str, Any]] = Store(hass, STORE_VERSION, STORE_KEY)
    lock = asyncio.Lock()
    latest: dict[str, Any] = {}

    async def on_document(message: mqtt.ReceiveMessage) -> None:
        try:
            document = json.loads(message.payload)
        except ValueError:
            _LOGGER.warning("%s: not JSON, ignored", message.topic)
            return
        if not isinstance(document, dict) or not isinstance(document.get("meters"), list):
            _LOGGER.warning("%s: not a meters document, ignored", message.topic)
            return
        latest["document"] = document
        async with lock:
            await apply_roles(hass, store, document)

    async def on_new_entity(event: Event[er.EventEntityRegistryUpdatedData]) -> None:
        # Zigbee2MQTT may announce a device after the roles document came: look again then
        if event.data["action"] == "create" and "document" in latest:
            async with lock:
                await apply_roles(hass, store, latest["document"])

    hass.bus.async_listen(er.EVENT_ENTITY_REGISTRY_UPDATED, on_new_entity)

    async def start() -> None:
        if not await mqtt.async_wait_for_mqtt_client(hass):
            _LOGGER.warning("MQTT is not set up: the Energy dashboard will not follow the meters' roles")
            return
        await mqtt.async_subscribe(hass, TOPIC, on_document, qos=1)

    hass.async_create_background_task(start(), "hems-roles")
    return True


async def apply_roles(hass: HomeAssistant, store: Store[dict[str, Any]], document: dict[str, Any]) -> None:
    """Merge what the roles ask for into the Energy preferences; remember what is ours."""
    manager = await async_get_manager(hass)
    kept = await store.async_load()
    owned = kept["owned"] if kept is not None else SEEDED
    registry = er.async_get(hass)

    def resolve(unique_id: str) -> str | None:
        return registry.async_get_entity_id("sensor", "mqtt", unique_id)

    prefs: dict[str, Any] = dict(manager.data or manager.default_preferences())
    update, now_owned = merge(prefs, document, owned, resolve)
    changed = any(prefs.get(key) != value for key, value in update.items())
    if changed:
        await manager.async_update(update)  # type: ignore[arg-type]
        _LOGGER.info(
            "Energy dashboard follows the meters' roles: %d sources, %d devices",
            len(update["energy_sources"]),
            len(update["device_consumption"]),
        )
        # what HA stored is ours (it adds `stat_rate` to a battery's `power_config`)
        now_owned = as_stored(now_owned, dict(manager.data or {}))
    disabled = list(kept.get("disabled", [])) if kept is not None else []
    disabled += disable_zigbee2mqtt_duplicates(registry, document, set(disabled))
    digest = kept.get("dashboard") if kept is not None else None
    digest = await write_dashboard(hass, registry, document, digest)
    saved = {"owned": now_owned, "disabled": disabled, "dashboard": digest}
    if kept != saved:
        await store.async_save(saved)


DASHBOARD = "dashboards/hems.yaml"
HEADER = (
    "# The HEMS dashboard, written by the hems integration from the meters this home has (the roles\n"
    "# chosen on each meter's device). Edit it and your version is kept: the integration then leaves\n"
    "# it alone (delete the file to have it written again).\n"
)


async def write_dashboard(
    hass: HomeAssistant, registry: er.EntityRegistry, document: dict[str, Any], digest: str | None
) -> str | None:
    """Write the HEMS dashboard when the file is still ours (or the release's, untouched); its digest."""
    site = str(document.get("site", "home"))

    def entity(meter: Any, quantity: str) -> str | None:
        return registry.async_get_entity_id("sensor", "mqtt", f"hems_{site}_{meter['id']}_{quantity}")

    # the flex entities the bridge announces (the document lists them), as HA has them
    flex: list[tuple[str, str]] = []
    for item in document.get("flex", ()):
        if isinstance(item, dict) and {"component", "key", "unique_id"} <= item.keys():
            entity_id = registry.async_get_entity_id(str(item["component"]), "mqtt", str(item["unique_id"]))
            if entity_id is not None:
                flex.append((str(item["key"]), entity_id))
    body = HEADER + yaml.safe_dump(hems_dashboard(document, entity, flex), sort_keys=False, allow_unicode=True)
    path = Path(hass.config.path(DASHBOARD))
    manifest = Path(hass.config.path(".hems", "manifest.json"))
    return await hass.async_add_executor_job(_write_if_ours, path, manifest, body, digest)


def _write_if_ours(path: Path, manifest: Path, body: str, digest: str | None) -> str | None:
    try:
        current = hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        current = None
    try:
        shipped = json.loads(manifest.read_text()).get(DASHBOARD)
    except (OSError, ValueError):
        shipped = None
    if current is not None and current not in (digest, shipped):
        return digest  # the householder's now
    data = body.encode()
    new = hashlib.sha256(data).hexdigest()
    if new != current:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.hems-tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # a YAML dashboard is read again when its file changes
        _LOGGER.info("%s written from the meters this home has", path)
    return new


def disable_zigbee2mqtt_duplicates(registry: er.EntityRegistry, document: dict[str, Any], done: set[str]) -> list[str]:
    """One entity per quantity: disable Zigbee2MQTT's own sensor of each quantity the bridge announces.

    Zigbee2MQTT keeps announcing the device (its switch, its other entities stay); only the
    duplicated sensors are disabled, once each: one the householder enables again stays enabled.
    Returns the unique ids disabled now.
    """
    disabled: list[str] = []
    for unique_id in zigbee2mqtt_duplicates(document, str(document.get("zigbee2mqtt_base_topic", "zigbee2mqtt"))):
        if unique_id in done:
            continue
        entity_id = registry.async_get_entity_id("sensor", "mqtt", unique_id)
        if entity_id is None:
            continue  # not announced (yet): looked at again with the next document
        entry = registry.async_get(entity_id)
        if entry is not None and entry.disabled_by is None:
            registry.async_update_entity(entity_id, disabled_by=er.RegistryEntryDisabler.INTEGRATION)
            _LOGGER.info("%s disabled: the HEMS bridge announces the same reading", entity_id)
        disabled.append(unique_id)
    return disabled
