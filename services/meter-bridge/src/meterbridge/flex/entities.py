"""Home Assistant entities of the "HEMS Flex" device (MQTT discovery), as data.

All state is one retained JSON document on `<base>/flex/state`; each entity picks its
value with a template. Commands come back on `<base>/flex/<key>/set` and
`<base>/flex/asset/<id>/allow/set`. Per-entity discovery (not the 2024.11+ device form)
so Home Assistant 2024.3 and current releases both accept it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..ha_topics import ORIGIN, Topics, entity_id_keys
from .assets import AssetConfig

ON, OFF, PRESS = "ON", "OFF", "PRESS"
MODES = ("auto", "manual", "off")


@dataclass(frozen=True, slots=True)
class FlexTopics:
    """Topics of the flex device under the bridge's base topic."""

    base: str

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


@dataclass(frozen=True, slots=True)
class FlexEntity:
    """One entity: `component` (switch, select...), `key` (object id part), name and extras."""

    component: str
    key: str
    name: str
    template: str
    extra: tuple[tuple[str, Any], ...] = ()
    command: bool = False


GLOBAL_ENTITIES: tuple[FlexEntity, ...] = (
    FlexEntity(
        "switch",
        "participation",
        "Participation",
        "{{ value_json.participation }}",
        (("payload_on", ON), ("payload_off", OFF), ("icon", "mdi:transmission-tower")),
        command=True,
    ),
    FlexEntity("select", "mode", "Mode", "{{ value_json.mode }}", (("options", list(MODES)),), command=True),
    FlexEntity(
        "number",
        "import_limit",
        "Import limit",
        "{{ value_json.import_limit_w }}",
        (
            ("min", 0),
            ("max", 100000),
            ("step", 100),
            ("mode", "box"),
            ("unit_of_measurement", "W"),
            ("device_class", "power"),
        ),
        command=True,
    ),
    FlexEntity("button", "opt_out", "Opt out", "", (("payload_press", PRESS), ("icon", "mdi:cancel")), command=True),
    FlexEntity(
        "binary_sensor",
        "event_active",
        "Event active",
        "{{ value_json.event_active }}",
        (("payload_on", ON), ("payload_off", OFF)),
    ),
    FlexEntity(
        "sensor", "event_status", "Event status", "{{ value_json.event_status }}", (("icon", "mdi:calendar-clock"),)
    ),
    FlexEntity(
        "sensor", "event_start", "Event start", "{{ value_json.event_start }}", (("device_class", "timestamp"),)
    ),
    FlexEntity("sensor", "event_end", "Event end", "{{ value_json.event_end }}", (("device_class", "timestamp"),)),
    FlexEntity(
        "sensor",
        "requested_reduction",
        "Requested reduction",
        "{{ value_json.requested_w }}",
        (("device_class", "power"), ("state_class", "measurement"), ("unit_of_measurement", "W")),
    ),
    FlexEntity(
        "sensor",
        "achieved_reduction",
        "Achieved reduction",
        "{{ value_json.achieved_w }}",
        (("device_class", "power"), ("state_class", "measurement"), ("unit_of_measurement", "W")),
    ),
    FlexEntity(
        "sensor",
        "last_decision",
        "Last decision",
        "{{ value_json.last_decision }}",
        (("icon", "mdi:format-list-bulleted"),),
    ),
)


def device_block(site_id: str) -> dict[str, Any]:
    """The one HA device all flex entities belong to."""
    return {"identifiers": [f"hems_{site_id}_flex"], "name": "HEMS Flex", "manufacturer": "HEMS", "model": "Flex"}


def _payload(topics: Topics, flex: FlexTopics, site_id: str, entity: FlexEntity, object_id: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": entity.name,
        "unique_id": f"hems_{site_id}_{object_id}",
        **entity_id_keys(entity.component, object_id),
        "availability_topic": topics.bridge_availability,
        "device": device_block(site_id),
        "origin": dict(ORIGIN),
    }
    if entity.template:
        payload["state_topic"] = flex.state
        payload["value_template"] = entity.template
    payload.update(dict(entity.extra))
    return payload


def discovery_messages(
    topics: Topics, flex: FlexTopics, site_id: str, assets: list[AssetConfig]
) -> list[tuple[str, dict[str, Any]]]:
    """Every discovery config (topic, payload) of the HEMS Flex device."""
    messages = []
    for entity in GLOBAL_ENTITIES:
        object_id = f"hems_flex_{entity.key}"
        payload = _payload(topics, flex, site_id, entity, object_id)
        if entity.command:
            payload["command_topic"] = flex.command(entity.key)
        if entity.key == "last_decision":
            payload["json_attributes_topic"] = flex.state
            payload["json_attributes_template"] = "{{ {'decisions': value_json.decisions} | tojson }}"
        messages.append((topics.discovery(entity.component, object_id), payload))
    for asset in assets:
        allow = FlexEntity(
            "switch",
            f"{asset.id}_allow",
            f"{asset.display_name} allow flex control",
            f"{{{{ value_json.assets.{asset.id}.allowed }}}}",
            (("payload_on", ON), ("payload_off", OFF)),
        )
        state = FlexEntity(
            "sensor",
            f"{asset.id}_state",
            f"{asset.display_name} state",
            f"{{{{ value_json.assets.{asset.id}.state }}}}",
            (("device_class", "enum"), ("options", ["normal", "shed", "boosted"])),
        )
        for entity in (allow, state):
            object_id = f"hems_flex_{entity.key}"
            payload = _payload(topics, flex, site_id, entity, object_id)
            if entity is allow:
                payload["command_topic"] = flex.allow(asset.id)
            messages.append((topics.discovery(entity.component, object_id), payload))
    return messages
