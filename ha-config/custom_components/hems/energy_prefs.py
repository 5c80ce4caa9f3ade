"""Energy preferences from the meters' roles: pure functions, no Home Assistant imports (unit-tested).

`wanted_entries` turns the bridge's roles document (`hems/meters`) into Energy preference entries
in the format of the pinned Home Assistant's `homeassistant/components/energy/data.py` (store 1.3:
one unified grid source with `stat_energy_from`/`stat_energy_to`/`stat_rate`; `solar`, `battery`,
`gas` sources; `device_consumption` items). `merge` puts them into the householder's preferences
and touches only entries this integration added itself and nobody changed since: an entry the
householder added or edited by hand is never removed or overwritten, and an entry of ours the
householder edited becomes theirs.

Power (`stat_rate`, a battery's `power_config`) is the bridge's recorded companion
`sensor.hems_<meter>_power_average` (the minute's mean, on `hems/meter/<id>/recorded`), not the
live `sensor.hems_<meter>_power`: the recorder leaves the live power out (packages/hems.yaml, SD
card wear), and the pinned HA's `energy/validate` flags a power statistic the recorder does not
record (`recorder_untracked`, energy/validate.py `_async_validate_power_stat`). Preferences that
still name a live power (earlier releases' seed, or a householder who picked it) are moved to the
companion by `recorded_power_rates` before they are merged.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Entry = dict[str, Any]
#: Finds a sensor's entity id from its unique id (`hems_<site>_<meter>_<quantity>`), or None.
Resolve = Callable[[str], str | None]

DEVICE_ROLES = ("ev_charger", "heat_pump", "device")


#: A live power of the bridge's (`sensor.hems_<meter>_power`, `..._heat_power`), which the recorder
#: leaves out; its recorded companion is the same id with `_average`.
LIVE_POWER = re.compile(r"sensor\.hems_[a-z0-9_]+_power")


def _entity(resolve: Resolve, site: str, meter: Mapping[str, Any], quantity: str, suffix: str = "") -> str | None:
    """The sensor of `quantity` (with `suffix`: its companion, `_average`) when the meter has it."""
    if quantity not in meter.get("quantities", ()):
        return None
    unique_id = f"hems_{site}_{meter['id']}_{quantity}{suffix}"
    return resolve(unique_id) or f"sensor.hems_{meter['id']}_{quantity}{suffix}"


def wanted_entries(document: Mapping[str, Any], resolve: Resolve) -> tuple[list[Entry], list[Entry]]:
    """(energy sources, individual devices) the roles ask for."""
    site = str(document.get("site", "home"))
    sources: list[Entry] = []
    devices: list[Entry] = []
    for meter in document.get("meters", ()):
        if not isinstance(meter, Mapping) or not isinstance(meter.get("id"), str):
            continue
        role, name = meter.get("role"), meter.get("name") or meter["id"]
        imported = _entity(resolve, site, meter, "energy_import")
        exported = _entity(resolve, site, meter, "energy_export")
        power = _entity(resolve, site, meter, "power", "_average")  # recorded: see the module's doc
        gas = _entity(resolve, site, meter, "gas_energy")
        if gas is not None:
            # a gas meter (a Glow CAD's) has no role to choose: it is the home's gas supply
            sources.append(
                {
                    "type": "gas",
                    "stat_energy_from": gas,
                    "stat_cost": None,
                    "entity_energy_price": None,
                    "number_energy_price": None,
                }
            )
        if role == "grid" and (imported or exported):
            grid: Entry = {
                "type": "grid",
                "stat_energy_from": imported,
                "stat_energy_to": exported,
                "stat_cost": None,
                "entity_energy_price": None,
                "number_energy_price": None,
                "stat_compensation": None,
                "entity_energy_price_export": None,
                "number_energy_price_export": None,
                "cost_adjustment_day": 0.0,
            }
            if power is not None:
                grid["stat_rate"] = power  # ours is HA's sign: positive importing
            sources.append(grid)
        elif role == "solar" and (exported or imported):
            # an inverter's meter counts production as export (or, wired the other way, import)
            solar: Entry = {
                "type": "solar",
                "stat_energy_from": exported or imported,
                "config_entry_solar_forecast": None,
            }
            if power is not None and exported is None:
                # HA's solar power is positive producing and its schema has no inverted form (the
                # 2026.10 frontend counts only values > 0): ours is, only when production is import
                solar["stat_rate"] = power
            sources.append(solar)
        elif role == "battery" and imported and exported:
            # into the battery is the meter's import (charging), out of it its export
            battery: Entry = {"type": "battery", "stat_energy_from": exported, "stat_energy_to": imported}
            if power is not None:
                # HA's battery power is positive discharging: ours (import +) inverted; HA makes the
                # inverted sensor itself and stores its id as `stat_rate`
                battery["power_config"] = {"stat_rate_inverted": power}
            sources.append(battery)
        elif role in DEVICE_ROLES and imported:
            device: Entry = {"stat_consumption": imported, "name": name}
            if power is not None:
                device["stat_rate"] = power
            devices.append(device)
    return sources, devices


def key_of(entry: Mapping[str, Any]) -> str:
    """What makes an entry the same one: its kind and its main statistic."""
    kind = entry.get("type", "device")
    stat = entry.get("stat_consumption") or entry.get("stat_energy_from") or entry.get("stat_energy_to")
    return f"{kind}:{stat}"


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _merge_list(current: Iterable[Entry], wanted: list[Entry], owned: list[Entry]) -> tuple[list[Entry], list[Entry]]:
    """(the new list, what of it is ours now)."""
    ours = {key_of(entry): entry for entry in owned}
    result: list[Entry] = []
    kept_keys: set[str] = set()
    untouched: dict[str, Entry] = {}
    for entry in current:
        mine = ours.get(key_of(entry))
        if mine is not None and _same(mine, entry):
            untouched[key_of(entry)] = entry  # ours, unchanged: replaced by what the roles want now (or dropped)
            continue
        result.append(entry)  # the householder's (or ours edited by hand: theirs now)
        kept_keys.add(key_of(entry))
    now_ours: list[Entry] = []
    for entry in wanted:
        if key_of(entry) in kept_keys:
            continue  # the householder already has this statistic: theirs wins
        stored = untouched.get(key_of(entry))
        if stored is not None and all(stored.get(field) == value for field, value in entry.items()):
            entry = stored  # what we wrote before, as HA completed it when it stored it
        result.append(entry)
        now_ours.append(entry)
    return result, now_ours


def as_stored(owned: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """`owned` as Home Assistant stored it (`stored`: its preferences after our update), entry by entry.

    HA completes some entries when it saves them (a battery's `power_config` gains `stat_rate`):
    recorded as written, our own entries would look edited by hand on the next document.
    """
    result: dict[str, Any] = {}
    for key in ("energy_sources", "device_consumption"):
        by_key = {key_of(entry): entry for entry in stored.get(key, ())}
        result[key] = [dict(by_key.get(key_of(entry), entry)) for entry in owned.get(key, ())]
    return result


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


def merge(
    prefs: Mapping[str, Any], document: Mapping[str, Any], owned: Mapping[str, Any], resolve: Resolve
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Energy preferences update, what this integration owns afterwards).

    A live bridge power in the preferences becomes its recorded companion first, in the
    householder's entries and in the record of ours alike (so that an entry of ours written with
    the live power, like earlier releases' seeded ones, still counts as untouched).
    """
    prefs, owned = copy.deepcopy(dict(prefs)), copy.deepcopy(dict(owned))
    recorded_power_rates(prefs)
    recorded_power_rates(owned)
    sources, devices = wanted_entries(document, resolve)
    new_sources, our_sources = _merge_list(
        prefs.get("energy_sources", ()), sources, list(owned.get("energy_sources", ()))
    )
    new_devices, our_devices = _merge_list(
        prefs.get("device_consumption", ()), devices, list(owned.get("device_consumption", ()))
    )
    update = {
        "energy_sources": new_sources,
        "device_consumption": new_devices,
        # the 2026 Energy panel spins forever without it (KNOWLEDGE.md)
        "device_consumption_water": list(prefs.get("device_consumption_water") or []),
    }
    return update, {"energy_sources": our_sources, "device_consumption": our_devices}


#: Our quantity -> the Zigbee2MQTT property it is read from (meterbridge/sources/zigbee2mqtt/parser.py).
Z2M_PROPERTIES = {
    "power": "power",
    "energy_import": "energy",
    "energy_export": "produced_energy",
    "voltage": "voltage",
    "current": "current",
    "temperature": "temperature",
    "humidity": "humidity",
    "co2": "co2",
}


def zigbee2mqtt_duplicates(document: Mapping[str, Any], base_topic: str = "zigbee2mqtt") -> list[str]:
    """Unique ids of Zigbee2MQTT's own sensors for what the bridge already announces.

    Zigbee2MQTT's unique ids are `<IEEE address>_<property>_<base topic>` (its homeassistant
    extension, `${entity.options.ID}_${config.object_id}_${settings.mqtt.base_topic}`).
    """
    found: list[str] = []
    for meter in document.get("meters", ()):
        ieee = meter.get("zigbee_ieee") if isinstance(meter, Mapping) else None
        if not isinstance(ieee, str):
            continue
        for quantity in meter.get("quantities", ()):
            prop = Z2M_PROPERTIES.get(quantity)
            if prop is not None:
                found.append(f"{ieee}_{prop}_{base_topic}")
    return found
