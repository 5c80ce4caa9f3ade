"""The HEMS dashboard from the meters a home has: pure, no Home Assistant imports (unit-tested).

`hems_dashboard` builds the Lovelace YAML dashboard (`dashboards/hems.yaml`, the `hems-energy`
dashboard of packages/hems.yaml) from the bridge's roles document: power, today's energy,
the room's climate, demand flexibility and meter health, each card naming only entities the
home has (no "Entity not found"). A meter set to "ignore" is left out.

The power graph shows the recorded means (`sensor.hems_<meter>_power_average`, one per recorded
step, 5 minutes by default): the recorder leaves the live `..._power` out (packages/hems.yaml,
SD-card wear), so a history graph of it would be empty but for the last hour's states in
memory. The live values are in "Meter health" (entities rows, from the state machine: nothing
recorded needed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: Display order of the roles, and what a card calls a meter of that role by default.
ROLE_ORDER = ("grid", "solar", "battery", "heat_pump", "ev_charger", "device")
TODAY = {"calendar": {"period": "day"}}
ROOM = ("temperature", "humidity", "co2")
#: The flex entities the dashboard shows when the bridge announces them (by key), with their names.
FLEX = (
    ("flex_mode", "Mode"),
    ("flex_event_end", "Current event ends"),
    ("flex_opt_out", "Opt out of the current event"),
)


def _meters(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    meters = [m for m in document.get("meters", ()) if isinstance(m, Mapping) and isinstance(m.get("id"), str)]
    meters = [m for m in meters if m.get("role") != "ignore"]
    order = {role: index for index, role in enumerate(ROLE_ORDER)}
    return sorted(meters, key=lambda m: (order.get(m.get("role") or "", len(order)), str(m.get("name"))))


def hems_dashboard(
    document: Mapping[str, Any],
    entity: Callable[[Mapping[str, Any], str], str | None],
    flex: Iterable[tuple[str, str]],
) -> dict[str, Any]:
    """The dashboard. `entity(meter, quantity)` is a meter's sensor id (None: it has none);
    `flex` the (key, entity id) of each flex entity the bridge announces and HA has (the roles
    document lists them: `flex_mode`, `flex_<asset>_allow`, ...)."""
    meters = _meters(document)
    cards: list[dict[str, Any]] = []

    def sensors(
        quantity: str, role_filter: Callable[[Mapping[str, Any]], bool] = lambda m: True, suffix: str = ""
    ) -> list[dict[str, Any]]:
        """The meters' `quantity` sensors (with `suffix`: its recorded companion, `_average`)."""
        found = []
        for meter in meters:
            entity_id = entity(meter, quantity + suffix) if quantity in meter.get("quantities", ()) else None
            if entity_id is not None and role_filter(meter):
                found.append({"entity": entity_id, "name": str(meter.get("name") or meter["id"])})
        return found

    power = sensors("power", lambda m: m.get("role") is not None)
    recorded_power = sensors("power", lambda m: m.get("role") is not None, "_average")
    if recorded_power:
        cards.append(
            {
                "type": "history-graph",
                "title": "Power history (W; import +, export -)",
                "hours_to_show": 24,
                "entities": recorded_power,
            }
        )
    today: list[dict[str, Any]] = []
    for meter in meters:
        if meter.get("role") is None:
            continue
        name = str(meter.get("name") or meter["id"])
        for quantity, suffix in (("energy_import", "in"), ("energy_export", "out")):
            entity_id = entity(meter, quantity) if quantity in meter.get("quantities", ()) else None
            if entity_id is None:
                continue
            label = name if meter.get("role") not in ("grid", "battery") else f"{name} {suffix}"
            today.append(
                {"type": "statistic", "name": label, "entity": entity_id, "stat_type": "change", "period": TODAY}
            )
    if today:
        cards.append({"type": "grid", "title": "Today's energy (kWh)", "columns": 2, "square": False, "cards": today})
    room = [item for quantity in ROOM for item in sensors(quantity)]
    if room:
        cards.append({"type": "entities", "title": "Rooms", "entities": room})
    existing = dict(flex)
    flex_rows = [{"entity": existing[key], "name": name} for key, name in FLEX if key in existing]
    flex_rows += [
        {
            "entity": entity_id,
            "name": key.removeprefix("flex_").removesuffix("_allow").replace("_", " ").capitalize() + " may be shifted",
        }
        for key, entity_id in sorted(existing.items())
        if key.startswith("flex_") and key.endswith("_allow")
    ]
    if flex_rows:
        cards.append(
            {"type": "entities", "title": "Demand flexibility", "show_header_toggle": False, "entities": flex_rows}
        )
    if power:
        health = [{**row, "secondary_info": "last-updated"} for row in power]
        cards.append(
            {
                "type": "entities",
                "title": "Meter health",
                "show_header_toggle": False,
                "state_color": True,
                "entities": health,
            }
        )
    if not cards:
        cards.append(
            {
                "type": "markdown",
                "content": "No meters yet. Plug in an EMU-2, pair a Zigbee plug or provision a Shelly: the"
                " HEMS bridge finds them and they appear here.",
            }
        )
    return {
        "title": "HEMS",
        "views": [{"title": "Energy", "path": "energy", "icon": "mdi:home-lightning-bolt", "cards": cards}],
    }
