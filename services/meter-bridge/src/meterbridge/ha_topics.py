"""The Home Assistant MQTT topic layout and device blocks, in one place.

Shared by the HA sink (which announces every entity, `ha_entities`) and the parts that
publish state for their entities (Shelly relays, utility account status, the InfluxDB
replication monitor, flex). It lives outside `sinks/` so that sources need not import from
a sink (STYLE.md: imports never point backwards; tests/unit/test_layers.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import __version__

#: The `origin` block: which software published the discovery config.
ORIGIN = {"name": "meter-bridge", "sw_version": __version__}


#: The node_id level of every discovery topic the bridge publishes (see `Topics.discovery`).
DISCOVERY_NODE_ID = "hems"


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics the bridge publishes under `base` and HA listens on under `discovery_prefix`."""

    base: str = "hems"
    discovery_prefix: str = "homeassistant"

    @property
    def bridge_availability(self) -> str:
        """Retained `online`/`offline` of the bridge (last will)."""
        return f"{self.base}/bridge/availability"

    @property
    def ha_status(self) -> str:
        """Where HA announces `online` after it (re)starts."""
        return f"{self.discovery_prefix}/status"

    def meter_state(self, meter_id: str) -> str:
        """Retained JSON state of one meter."""
        return f"{self.base}/meter/{meter_id}"

    def meter_recorded(self, meter_id: str) -> str:
        """Retained JSON of one meter at a coarse clock step: what Home Assistant's recorder keeps."""
        return f"{self.base}/meter/{meter_id}/recorded"

    def meter_availability(self, meter_id: str) -> str:
        """Retained `online`/`offline` of one meter."""
        return f"{self.base}/meter/{meter_id}/availability"

    def discovery(self, component: str, object_id: str) -> str:
        """The discovery config topic of one entity: `<prefix>/<component>/hems/<object_id>/config`.

        The `hems` node_id level (HA: `<prefix>/<component>/[<node_id>/]<object_id>/config`,
        in 2024.3 and current releases) lets the broker's ACL confine the bridge's user to
        `<prefix>/+/hems/#`: it cannot overwrite zigbee2mqtt's or anyone else's discovery.
        Entity ids come from `entity_id_keys`, so the node_id changes nothing in HA.
        """
        return f"{self.discovery_prefix}/{component}/{DISCOVERY_NODE_ID}/{object_id}/config"


def entity_id_keys(component: str, object_id: str) -> dict[str, str]:
    """The discovery keys that give an entity the id `<component>.<object_id>` on every HA.

    HA 2025.10 deprecated `object_id` and 2026.4 dropped it without a warning; its successor
    `default_entity_id` takes the whole id, domain included (without the domain HA made
    `sensor.unnamed_device`). Both are sent: HA before 2025.10 reads `object_id`, later releases
    `default_entity_id`. Either only sets the id of a new entity: the entity registry keeps the
    id of an existing one across upgrades.
    """
    return {"object_id": object_id, "default_entity_id": f"{component}.{object_id}"}
