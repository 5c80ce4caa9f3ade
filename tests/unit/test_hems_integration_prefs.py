"""The `hems` HA integration's pure part (ha-config/custom_components/hems/energy_prefs.py and
dashboard.py), its record of what earlier releases' seeding step wrote (it must stay equal to the
recorded store, tests/fixtures/homeassistant/previous-release/), and the shipped dashboard."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
HEMS = REPO / "ha-config" / "custom_components" / "hems"
PREVIOUS = REPO / "tests" / "fixtures" / "homeassistant" / "previous-release"


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"hems_{name}", HEMS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prefs = _load("energy_prefs")
dashboard = _load("dashboard")
DOC = {
    "site": "home",
    "meters": [
        {
            "id": "emu2",
            "name": "Smart meter",
            "role": "grid",
            "quantities": ["energy_export", "energy_import", "power"],
        },
        {"id": "plug", "name": "Heat pump", "role": "heat_pump", "quantities": ["energy_import", "power"]},
        {"id": "pv", "name": "Inverter", "role": "solar", "quantities": ["energy_export", "power"]},
        {"id": "room", "name": "Living room", "role": None, "quantities": ["temperature"]},
        {"id": "tv", "name": "TV", "role": "ignore", "quantities": ["energy_import"]},
    ],
}


def no_registry(_unique_id: str) -> None:
    return None


def test_roles_become_energy_entries() -> None:
    sources, devices = prefs.wanted_entries(DOC, no_registry)
    grid, solar = sources
    assert (grid["type"], grid["stat_energy_from"], grid["stat_energy_to"], grid["stat_rate"]) == (
        "grid",
        "sensor.hems_emu2_energy_import",
        "sensor.hems_emu2_energy_export",
        "sensor.hems_emu2_power_average",
    )
    assert solar == {
        "type": "solar",
        "stat_energy_from": "sensor.hems_pv_energy_export",
        "config_entry_solar_forecast": None,
    }
    assert devices == [
        {
            "stat_consumption": "sensor.hems_plug_energy_import",
            "name": "Heat pump",
            "stat_rate": "sensor.hems_plug_power_average",
        }
    ]


def test_power_is_the_recorded_average_found_by_unique_id() -> None:
    """The recorder keeps `..._power_average`, not the live power (energy/validate: recorder_untracked)."""
    renamed = {"hems_home_emu2_power_average": "sensor.grid_power_mean", "hems_home_emu2_power": "sensor.grid_power"}
    grid, _ = prefs.wanted_entries(DOC, renamed.get)[0]
    assert grid["stat_rate"] == "sensor.grid_power_mean"


def test_entities_are_found_by_unique_id_when_renamed() -> None:
    renamed = {"hems_home_plug_energy_import": "sensor.heat_pump_energy"}
    _, devices = prefs.wanted_entries(DOC, renamed.get)
    assert devices[0]["stat_consumption"] == "sensor.heat_pump_energy"


def test_merge_keeps_hand_made_and_hand_edited_entries() -> None:
    update, owned = prefs.merge({}, DOC, {}, no_registry)
    hand = {"stat_consumption": "sensor.kettle_energy"}
    # the householder adds a device and gives our grid source a price
    edited_grid = {**update["energy_sources"][0], "number_energy_price": 0.3}
    current = {
        "energy_sources": [edited_grid, update["energy_sources"][1]],
        "device_consumption": [*update["device_consumption"], hand],
    }
    doc = {**DOC, "meters": [{**m, "role": "ignore"} if m["id"] in ("plug", "emu2") else m for m in DOC["meters"]]}
    again, owned_again = prefs.merge(current, doc, owned, no_registry)
    assert again["device_consumption"] == [hand], "our heat pump leaves; the hand-made device stays"
    assert edited_grid in again["energy_sources"], "an entry edited by hand is the householder's now"
    assert all(entry is not edited_grid for entry in owned_again["energy_sources"])
    assert again["device_consumption_water"] == []


def _constants(*names: str) -> dict[str, Any]:
    """Module-level constants of the integration's __init__.py (it imports Home Assistant: not loaded here)."""
    tree = ast.parse((HEMS / "__init__.py").read_text())
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name) and target.id in names:
                values[target.id] = node.value
    return values


def test_seeded_preferences_are_what_earlier_releases_wrote() -> None:
    values = _constants("_SEEDED_GRID", "SEEDED")
    grid = ast.literal_eval(values["_SEEDED_GRID"])
    ours = ast.literal_eval(ast.unparse(values["SEEDED"]).replace("_SEEDED_GRID", repr(grid)))
    seeded = json.loads((PREVIOUS / "storage-energy.json").read_text())["data"]
    assert ours["energy_sources"] == seeded["energy_sources"]
    assert ours["device_consumption"] == seeded["device_consumption"]


def test_the_shipped_dashboard_is_the_one_for_a_home_without_meters() -> None:
    """A fresh home shows no "Entity not found": the integration fills the dashboard in from there."""
    header = ast.literal_eval(_constants("HEADER")["HEADER"])
    empty = dashboard.hems_dashboard({"meters": []}, lambda meter, quantity: None, [])
    shipped = (REPO / "ha-config" / "dashboards" / "hems.yaml").read_text()
    assert shipped == header + yaml.safe_dump(empty, sort_keys=False, allow_unicode=True)
    assert _entities(yaml.safe_load(shipped)) == []


def test_battery_and_solar_power() -> None:
    """HA's battery power is positive discharging (ours: import +, so inverted through `power_config`);
    its solar power positive producing, with no inverted form: wired only where production is import."""
    doc = {
        "meters": [
            {"id": "bat", "role": "battery", "quantities": ["energy_export", "energy_import", "power"]},
            {"id": "pv", "role": "solar", "quantities": ["energy_export", "power"]},
            {"id": "pv2", "role": "solar", "quantities": ["energy_import", "power"]},
        ]
    }
    battery, solar, solar_import = prefs.wanted_entries(doc, no_registry)[0]
    assert battery == {
        "type": "battery",
        "stat_energy_from": "sensor.hems_bat_energy_export",
        "stat_energy_to": "sensor.hems_bat_energy_import",
        "power_config": {"stat_rate_inverted": "sensor.hems_bat_power_average"},
    }
    assert "stat_rate" not in solar
    assert solar_import["stat_rate"] == "sensor.hems_pv2_power_average"


def test_entries_home_assistant_completed_stay_ours() -> None:
    """HA adds `stat_rate` to a battery's `power_config` when it stores it: still ours, and not rewritten."""
    doc = {"meters": [{"id": "bat", "role": "battery", "quantities": ["energy_export", "energy_import", "power"]}]}
    update, owned = prefs.merge({}, doc, {}, no_registry)
    completed = {**update["energy_sources"][0], "stat_rate": "sensor.hems_bat_power_average_inverted"}
    stored = {**update, "energy_sources": [completed]}
    owned = prefs.as_stored(owned, stored)
    again, owned_again = prefs.merge(stored, doc, owned, no_registry)
    assert again["energy_sources"] == stored["energy_sources"], "no update for what HA completed"
    assert owned_again == owned
    gone, _ = prefs.merge(stored, {"meters": []}, owned, no_registry)
    assert gone["energy_sources"] == [], "and it leaves with its meter"


def test_zigbee2mqtt_duplicates_are_named_as_zigbee2mqtt_names_them() -> None:
    doc = {
        "meters": [
            {"id": "z_plug", "zigbee_ieee": "0xa4c1", "quantities": ["energy_import", "power", "voltage"]},
            {"id": "emu2", "quantities": ["power"]},
        ]
    }
    assert prefs.zigbee2mqtt_duplicates(doc) == [
        "0xa4c1_energy_zigbee2mqtt",
        "0xa4c1_power_zigbee2mqtt",
        "0xa4c1_voltage_zigbee2mqtt",
    ]


def _entities(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["entity"]] if isinstance(node.get("entity"), str) else []
        return own + [e for value in node.values() for e in _entities(value)]
    if isinstance(node, list):
        return [e for item in node for e in _entities(item)]
    return []


def test_the_dashboard_names_only_what_the_home_has() -> None:
    def entity(meter: dict[str, Any], quantity: str) -> str:
        return f"sensor.hems_{meter['id']}_{quantity}"

    flex = [("flex_heat_pump_allow", "switch.hems_flex_heat_pump_allow"), ("flex_mode", "select.hems_flex_mode")]
    board = dashboard.hems_dashboard(DOC, entity, flex)
    named = set(_entities(board))
    assert "sensor.hems_room_temperature" in named
    assert "sensor.hems_emu2_power" in named, "the live power, in Meter health"
    graph = next(card for card in board["views"][0]["cards"] if card["type"] == "history-graph")
    assert [row["entity"] for row in graph["entities"]] == [
        "sensor.hems_emu2_power_average",
        "sensor.hems_pv_power_average",
        "sensor.hems_plug_power_average",
    ], "history from the recorded 1-minute means (the recorder leaves the live power out)"
    health = next(card for card in board["views"][0]["cards"] if card.get("title") == "Meter health")
    assert {row["entity"] for row in health["entities"]} == {
        "sensor.hems_emu2_power",
        "sensor.hems_pv_power",
        "sensor.hems_plug_power",
    }
    assert not any("tv" in e for e in named), "an ignored meter is left out"
    assert "switch.hems_flex_ev_allow" not in named, "no EV asset: no EV switch"
    assert "switch.hems_flex_heat_pump_allow" in named
    empty = dashboard.hems_dashboard({"meters": []}, entity, [])
    assert _entities(empty) == []
    assert empty["views"][0]["cards"][0]["type"] == "markdown"


def test_a_live_power_moves_to_the_recorded_average_and_nothing_else_changes() -> None:
    """An earlier release's preferences, or a householder, named the live `sensor.hems_<meter>_power`,
    which the recorder no longer keeps (energy/validate: recorder_untracked): it becomes
    `..._power_average`, in the householder's own entries too; everything else stays."""
    mine = {
        "energy_sources": [
            {"type": "battery", "stat_energy_from": "sensor.powerwall_in", "stat_rate": "sensor.powerwall_power"},
            {
                "type": "solar",
                "stat_energy_from": "sensor.roof",
                "power_config": {"stat_rate_from": "sensor.hems_roof_power"},
            },
        ],
        "device_consumption": [
            {"stat_consumption": "sensor.hems_ev_energy_import", "stat_rate": "sensor.hems_ev_power", "name": "Car"},
            {"stat_consumption": "sensor.hems_kiln_energy_import", "stat_rate": "sensor.hems_kiln_power_average"},
        ],
        "device_consumption_water": [],
    }
    update, owned = prefs.merge(mine, {"meters": []}, {}, no_registry)
    battery, solar = update["energy_sources"]
    assert battery == mine["energy_sources"][0], "not the bridge's"
    moved = {"stat_rate_from": "sensor.hems_roof_power_average"}
    assert solar == {**mine["energy_sources"][1], "power_config": moved}
    assert update["device_consumption"] == [
        {
            "stat_consumption": "sensor.hems_ev_energy_import",
            "stat_rate": "sensor.hems_ev_power_average",
            "name": "Car",
        },
        mine["device_consumption"][1],
    ]
    assert owned == {"energy_sources": [], "device_consumption": []}, "the householder's entries stay theirs"
    assert mine["device_consumption"][0]["stat_rate"] == "sensor.hems_ev_power", "the input is not changed"
    again, _ = prefs.merge(update, {"meters": []}, owned, no_registry)
    assert again == update, "nothing to move the next time"


def test_earlier_releases_seeded_entries_converge_with_the_live_power() -> None:
    """`SEEDED` names the live power as the old seed wrote it: compared after the same move, the seeded
    entries are still ours, and the roles replace them (no stale `sensor.hems_grid_power` left)."""
    values = _constants("_SEEDED_GRID", "SEEDED")
    grid = ast.literal_eval(values["_SEEDED_GRID"])
    seeded = ast.literal_eval(ast.unparse(values["SEEDED"]).replace("_SEEDED_GRID", repr(grid)))
    stored = json.loads((PREVIOUS / "storage-energy.json").read_text())["data"]
    update, owned = prefs.merge(stored, DOC, seeded, no_registry)
    ids = json.dumps(update)
    assert "sensor.hems_grid_" not in ids, "the seeded meters are gone"
    assert "sensor.hems_ev_" not in ids
    assert update["energy_sources"][0]["stat_rate"] == "sensor.hems_emu2_power_average"
    assert owned["device_consumption"] == update["device_consumption"]
