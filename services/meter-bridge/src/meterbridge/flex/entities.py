"""Home Assistant entities of the "HEMS Flex" device (MQTT discovery), as data.

All state is one retained JSON document on `<base>/flex/state`; each entity picks its
value with a template. Commands come back on `<base>/flex/<key>/set` and
`<base>/flex/asset/<id>/allow/set`. Per-entity discovery (not the 2024.11+ device form)
so Home Assistant 2024.3 and current releases both accept it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..ha_entities import Device, EntityDescription
from .assets import AssetConfig

ON, OFF, PRESS = "ON", "OFF", "PRESS"
MODES = ("auto", "manual", "off")


@dataclass(frozen=True, slots=True)
class FlexTopics:
    """Topics of the flex device under the bridge's base topic."""

    base: str
    #: Where community events arrive ("": `<base>/flex/event`).
    event_topic: str = ""
    #: Where manual events from Home Assistant arrive ("": `<base>/flex/manual_event`).
    manual_topic: str = ""

    @property
    def event(self) -> str:
        """Community events (JSON, docs/flex-event.schema.json)."""
        return self.event_topic or f"{self.base}/flex/event"

    @property
    def manual(self) -> str:
        """Manual events (same schema)."""
        return self.manual_topic or f"{self.base}/flex/manual_event"

    @property
    def state(self) -> str:
        """Retained JSON state of everything flex shows."""
        return f"{self.base}/flex/state"

    def command(self, key: str) -> str:
        """Where HA sends a command for `key` (`participation`, `mode`, `import_limit`, `opt_out`)."""
        return f"{self.base}/flex/{key}/set"

    def allow(self, asset_id: str) -> str:
        """Where HA sends the per-asset "allow flex control" switch."""
        return f"{self.base}/flex/asset/{asset_id}/allow/set"

    @property
    def command_filters(self) -> tuple[str, str]:
        """Subscriptions covering every command topic."""
        return f"{self.base}/flex/+/set", f"{self.base}/flex/asset/+/allow/set"


#: The one HA device every flex entity belongs to.
DEVICE = Device("flex", "HEMS Flex", manufacturer="HEMS", model="Flex")

#: (component, key, name, state template ("": none), command: whether HA sends commands, classes and extras)
_GLOBAL: tuple[tuple[str, str, str, str, bool, dict[str, Any]], ...] = (
    (
        "switch",
        "participation",
        "Participation",
        "{{ value_json.participation }}",
        True,
        {"payload_on": ON, "payload_off": OFF, "icon": "mdi:transmission-tower"},
    ),
    ("select", "mode", "Mode", "{{ value_json.mode }}", True, {"options": MODES}),
    (
        "number",
        "import_limit",
        "Import limit",
        "{{ value_json.import_limit_w }}",
        True,
        {"min": 0, "max": 100000, "step": 100, "mode": "box", "unit": "W", "device_class": "power"},
    ),
    ("button", "opt_out", "Opt out", "", True, {"payload_press": PRESS, "icon": "mdi:cancel"}),
    (
        "binary_sensor",
        "event_active",
        "Event active",
        "{{ value_json.event_active }}",
        False,
        {"payload_on": ON, "payload_off": OFF},
    ),
    ("sensor", "event_status", "Event status", "{{ value_json.event_status }}", False, {"icon": "mdi:calendar-clock"}),
    ("sensor", "event_start", "Event start", "{{ value_json.event_start }}", False, {"device_class": "timestamp"}),
    ("sensor", "event_end", "Event end", "{{ value_json.event_end }}", False, {"device_class": "timestamp"}),
    (
        "sensor",
        "requested_reduction",
        "Requested reduction",
        "{{ value_json.requested_w }}",
        False,
        {"device_class": "power", "state_class": "measurement", "unit": "W"},
    ),
    (
        "sensor",
        "achieved_reduction",
        "Achieved reduction",
        "{{ value_json.achieved_w }}",
        False,
        {"device_class": "power", "state_class": "measurement", "unit": "W"},
    ),
    (
        "sensor",
        "delivered_energy",
        "Delivered energy (last event)",
        "{{ value_json.delivered_kwh }}",
        False,
        {
            "device_class": "energy",
            "unit": "kWh",
            "icon": "mdi:transmission-tower-export",
            # the per-event history (newest first): docs/flex-settlement.md
            "json_attributes_template": (
                "{{ {'event_id': value_json.delivered_event, 'events': value_json.deliveries} | tojson }}"
            ),
        },
    ),
    (
        "sensor",
        "delivered_share",
        "Delivered share of requested (last event)",
        "{{ value_json.delivered_share }}",
        False,
        {"unit": "%", "icon": "mdi:percent"},
    ),
    (
        "sensor",
        "last_decision",
        "Last decision",
        "{{ value_json.last_decision }}",
        False,
        {
            "icon": "mdi:format-list-bulleted",
            "json_attributes_template": "{{ {'decisions': value_json.decisions} | tojson }}",
        },
    ),
)

#: Discovery keys `EntityDescription` has a field of its own for.
_FIELDS = {"device_class": "device_class", "state_class": "state_class", "unit": "unit", "icon": "icon"}


def _entity(
    flex: FlexTopics, component: str, key: str, name: str, template: str, command: str | None, details: dict[str, Any]
) -> EntityDescription:
    fields = {_FIELDS[k]: v for k, v in details.items() if k in _FIELDS}
    extra = tuple((k, v) for k, v in details.items() if k not in _FIELDS)
    if "json_attributes_template" in details:
        extra = (("json_attributes_topic", flex.state), *extra)
    return EntityDescription(
        component,
        f"flex_{key}",
        name,
        DEVICE,
        state_topic=flex.state if template else None,
        value_template=template or None,
        command_topic=command,
        extra=extra,
        # released as `hems_<site>_hems_flex_<key>`: unique ids never change
        unique_key=f"hems_flex_{key}",
        **fields,
    )


def flex_entities(flex: FlexTopics, assets: Sequence[AssetConfig]) -> list[EntityDescription]:
    """Every entity of the HEMS Flex device: the global controls and, per asset, allow + state."""
    entities = [
        _entity(flex, component, key, name, template, flex.command(key) if command else None, details)
        for component, key, name, template, command, details in _GLOBAL
    ]
    for asset in assets:
        entities.append(
            _entity(
                flex,
                "switch",
                f"{asset.id}_allow",
                f"{asset.display_name} allow flex control",
                f"{{{{ value_json.assets.{asset.id}.allowed }}}}",
                flex.allow(asset.id),
                {"payload_on": ON, "payload_off": OFF},
            )
        )
        entities.append(
            _entity(
                flex,
                "sensor",
                f"{asset.id}_state",
                f"{asset.display_name} state",
                f"{{{{ value_json.assets.{asset.id}.state }}}}",
                None,
                {"device_class": "enum", "options": ("normal", "shed", "boosted")},
            )
        )
    return entities
