"""`meter-bridge import senselink FILE`: a SenseLink configuration turned into ours.

SenseLink (https://github.com/cbpowell/SenseLink) emulates Kasa HS110 plugs for a Sense monitor,
as our `kasa` sink does. Its YAML has a top-level `sources` list; each entry is one of
`hass` (`url`, `auth_token`, `plugs`), `mqtt` (`host`, `port`, `username`, `password`,
`plugs`), `static` (`plugs`), `mutable` (`plugs` with a settable `power`) and `aggregate`
(`plugs` with `elements`). Each plug is `{<plug id>: {...}}` with `alias`, `mac`, `device_id`,
`skip_rate`, `voltage`, `min_watts`, `max_watts`, `off_usage`, `on_fraction` and the keys of its
source (SenseLink's `senselink.py`, `plug_instance.py`, `data_source.py`,
`homeassistant/ha_data_source.py`, `mqtt/mqtt_data_source.py`).

What it becomes: one `type: ha` source per `hass` entry, one `type: mqtt` source per `mqtt`
entry, and one `kasa` plug per SenseLink plug with the same MAC (Sense tells plugs apart by
MAC) and the same deviceId, so Sense keeps seeing the same devices. SenseLink's answers carry
the MAC as `deviceId` (its configured `device_id` never reaches the wire), so that is the
plug's `device_id` here. Every line that cannot be carried
over is named, with the reason (`Skipped`). Secrets are not copied: the HA token becomes
`${HA_TOKEN}` and the user is told to set it.

`convert` is pure (data in, data out); the CLI prints the result merged into a bridge config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .sinks.kasa.config import random_mac
from .yamlsource import KeyPath, LoadedYaml

#: Keys every SenseLink plug may have, and what becomes of them.
_PLUG_KEYS = {"alias", "mac", "device_id", "min_watts", "max_watts", "off_usage", "on_fraction"}
_HASS_KEYS = {
    "entity_id",
    "attribute",
    "attribute_min",
    "attribute_max",
    "power_keypath",
    "attribute_keypath",
    "state_keypath",
    "on_state_value",
    "off_state_value",
}
_MQTT_KEYS = {
    "power_topic",
    "power_topic_keypath",
    "state_topic",
    "state_topic_keypath",
    "attribute_topic",
    "attribute_topic_keypath",
    "attribute_min",
    "attribute_max",
    "on_state_value",
    "off_state_value",
    "timeout_duration",
}
_NOT_CARRIED = {
    "skip_rate": "the bridge answers every Sense query (its rate limit is kasa.max_queries_per_s for all plugs)",
    "voltage": "the bridge reports a meter's own voltage, else kasa.voltage_v (one value for every plug)",
}


@dataclass(frozen=True, slots=True)
class Skipped:
    """A line of the SenseLink file that is not carried over (or carried with a change: `changed`), and why."""

    line: int
    key: str
    reason: str
    changed: bool = False

    @property
    def verdict(self) -> str:
        """`changed` or `not carried over`."""
        return "changed" if self.changed else "not carried over"

    def __str__(self) -> str:
        return f"line {self.line}: {self.key}: {self.verdict}: {self.reason}"


@dataclass
class Conversion:
    """The `sources` and `kasa` sections made from a SenseLink file, and what was left behind."""

    sources: list[dict[str, Any]] = field(default_factory=list)
    plugs: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    #: Things the user must do (set a variable), one sentence each.
    notes: list[str] = field(default_factory=list)


def slug(name: str) -> str:
    """A SenseLink plug id as one of our ids: lower case, `[a-z0-9_]`, starting with a letter or digit."""
    text = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return (text or "plug")[:63]


def _state_value(value: object) -> str:
    """A state value as SenseLink's YAML gives it: unquoted `on`/`off` are YAML 1.1 booleans."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _keypath(path: object) -> tuple[str, str] | None:
    """SenseLink's `/`-separated key path into an HA state object as (where, dotted rest):
    `("state", "")` or `("attributes", "usage.power")`; None for anything else."""
    if not isinstance(path, str):
        return None
    parts = [p for p in path.split("/") if p]
    if parts == ["state"]:
        return "state", ""
    if len(parts) >= 2 and parts[0] == "attributes":
        return "attributes", ".".join(parts[1:])
    return None


def _number(value: object, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


class _Converter:
    def __init__(self, loaded: LoadedYaml) -> None:
        self.loaded = loaded
        self.out = Conversion()
        self.ids: dict[str, str] = {}  # SenseLink plug id -> our id
        self.macs: set[str] = set()

    def line(self, path: KeyPath) -> int:
        while path and path not in self.loaded.lines:
            path = path[:-1]
        return self.loaded.lines.get(path, 1)

    def skip(self, path: KeyPath, reason: str, changed: bool = False) -> None:
        key = ".".join(str(p) for p in path) or "(file)"
        self.out.skipped.append(Skipped(self.line(path), key, reason, changed))

    def run(self) -> Conversion:
        data = self.loaded.data
        if not isinstance(data, dict) or not isinstance(data.get("sources"), list):
            self.skip((), "not a SenseLink configuration: no top-level `sources` list")
            return self.out
        for key in data:
            if key != "sources":
                self.skip((key,), "SenseLink's own setting; the bridge has none like it")
        aggregates: list[tuple[KeyPath, dict[str, Any]]] = []
        counts: dict[str, int] = {}
        for index, entry in enumerate(data["sources"]):
            path: KeyPath = ("sources", index)
            if not isinstance(entry, dict) or len(entry) != 1:
                self.skip(path, "a source must be one of hass, mqtt, static, mutable, aggregate")
                continue
            ((kind, body),) = entry.items()
            kind_l = str(kind).lower()
            body = body if isinstance(body, dict) else {}
            counts[kind_l] = counts.get(kind_l, 0) + 1
            source_id = f"senselink_{kind_l}" + (f"_{counts[kind_l]}" if counts[kind_l] > 1 else "")
            if kind_l == "hass":
                self.hass((*path, kind), body, source_id)
            elif kind_l == "mqtt":
                self.mqtt((*path, kind), body, source_id)
            elif kind_l in ("static", "mutable"):
                for plug_path, plug_id, details in self.plug_entries((*path, kind), body):
                    watts = self.static_watts(plug_path, details, kind_l)
                    self.plug(plug_path, plug_id, details, watts=watts)
            elif kind_l == "aggregate":
                aggregates.append(((*path, kind), body))
            else:
                self.skip((*path, kind), f"unknown SenseLink source type {kind!r}")
        for path, body in aggregates:  # SenseLink too resolves aggregates after every other plug
            for plug_path, plug_id, details in self.plug_entries(path, body):
                self.aggregate(plug_path, plug_id, details)
        return self.out

    def plug_entries(self, path: KeyPath, body: dict[str, Any]) -> list[tuple[KeyPath, str, dict[str, Any]]]:
        for key in body:
            if key != "plugs" and key not in _SOURCE_KEYS.get(str(path[-1]).lower(), set()):
                self.skip((*path, key), "unknown key")
        entries = []
        for index, plug in enumerate(body.get("plugs") or []):
            plug_path: KeyPath = (*path, "plugs", index)
            if not isinstance(plug, dict) or len(plug) != 1:
                self.skip(plug_path, "a plug must be `- <plug id>: {...}`")
                continue
            ((plug_id, details),) = plug.items()
            entries.append(((*plug_path, plug_id), str(plug_id), details if isinstance(details, dict) else {}))
        return entries

    def plug(self, path: KeyPath, plug_id: str, details: dict[str, Any], **value: Any) -> str:
        """Add the kasa plug of a SenseLink plug (`value`: meter, watts or aggregate); its id."""
        our_id = slug(plug_id)
        while our_id in self.ids.values():
            our_id = slug(f"{our_id}_2")
        self.ids[plug_id] = our_id
        mac = details.get("mac")
        if not isinstance(mac, str):
            mac = random_mac()
            self.skip(
                path,
                f"no mac: SenseLink made a new one at every start, so Sense saw a new plug each time; "
                f"given {mac} from now on",
                changed=True,
            )
        # SenseLink answered with the MAC as deviceId, whatever `device_id` said (plug_instance.py,
        # generate_response): the migrated plug answers the same.
        plug: dict[str, Any] = {
            "id": our_id,
            "alias": str(details.get("alias") or plug_id),
            "mac": mac,
            "device_id": mac.upper(),
        }
        if "device_id" in details:
            self.skip(
                (*path, "device_id"),
                "SenseLink sent the MAC as deviceId, not this value; the plug sends the MAC too, as Sense knows it",
                changed=True,
            )
        for key, reason in _NOT_CARRIED.items():
            if key in details:
                self.skip((*path, key), reason)
        plug.update(value)
        self.out.plugs.append(plug)
        return our_id

    def static_watts(self, path: KeyPath, details: dict[str, Any], kind: str) -> float:
        allowed = _PLUG_KEYS | set(_NOT_CARRIED) | ({"power"} if kind == "mutable" else set())
        for key in details:
            if key not in allowed:
                self.skip((*path, key), "unknown key for a static plug")
        if kind == "mutable":
            self.skip(
                path, "a mutable plug's power was set at run time by SenseLink's API: carried as a constant", True
            )
            return _number(details.get("power"))
        low, high = _number(details.get("min_watts")), _number(details.get("max_watts"))
        return low + _number(details.get("on_fraction"), 1.0) * (high - low)

    def hass(self, path: KeyPath, body: dict[str, Any], source_id: str) -> None:
        entities = []
        for plug_path, plug_id, details in self.plug_entries(path, body):
            entity = self.hass_entity(plug_path, details, slug(plug_id))
            if entity is None:
                continue
            meter = self.plug(plug_path, plug_id, details, meter=entity["meter"])
            entity["meter"] = meter
            entities.append(entity)
        if not entities:
            return
        if "auth_token" in body:
            self.out.notes.append(
                f"{source_id}: set the variable HA_TOKEN to SenseLink's auth_token (or a new long-lived token); "
                "the config reads it as ${HA_TOKEN} so the token is not written into the file"
            )
        source: dict[str, Any] = {"type": "ha", "id": source_id}
        if isinstance(body.get("url"), str):
            source["url"] = body["url"]
        source.update(token="${HA_TOKEN}", entities=entities)  # noqa: S106 - a placeholder read from the environment
        self.out.sources.append(source)

    def hass_entity(self, path: KeyPath, details: dict[str, Any], meter: str) -> dict[str, Any] | None:
        for key in details:
            if key not in _PLUG_KEYS | _HASS_KEYS | set(_NOT_CARRIED):
                self.skip((*path, key), "unknown key for a hass plug")
        entity_id = details.get("entity_id")
        if not isinstance(entity_id, str):
            self.skip(path, "no entity_id: plug not carried over")
            return None
        entity: dict[str, Any] = {"entity_id": entity_id, "meter": meter}
        low, high = _number(details.get("min_watts")), _number(details.get("max_watts"))
        entity["off_w"] = _number(details.get("off_usage"), low)
        entity["off_states"] = [_state_value(details.get("off_state_value", "off"))]
        if "on_state_value" in details:
            entity["on_states"] = [_state_value(details["on_state_value"])]
            entity["on_w"] = high
        linear = False
        if "power_keypath" in details:
            where = _keypath(details["power_keypath"])
            if where is None:
                self.skip((*path, "power_keypath"), "only `state` or `attributes/...` paths are carried over")
            elif where[0] == "attributes":
                entity["attribute"] = where[1]
        elif "attribute" in details or "attribute_keypath" in details:
            if "attribute" in details:
                entity["attribute"] = str(details["attribute"])
            else:
                where = _keypath(details["attribute_keypath"])
                if where is None or where[0] != "attributes":
                    self.skip((*path, "attribute_keypath"), "only `attributes/...` paths are carried over")
                else:
                    entity["attribute"] = where[1]
            linear = "attribute" in entity
        if "state_keypath" in details:
            where = _keypath(details["state_keypath"])
            if where is None:
                self.skip((*path, "state_keypath"), "only `state` or `attributes/...` paths are carried over")
            elif where[0] == "attributes":
                entity["state_attribute"] = where[1]
        if linear:
            value_min, value_max = _number(details.get("attribute_min")), _number(details.get("attribute_max"))
            if value_max == value_min:
                self.skip(path, "attribute_min equals attribute_max: the attribute is read as watts, unscaled")
            else:
                entity["linear"] = {"value_min": value_min, "value_max": value_max, "watts_min": low, "watts_max": high}
        return entity

    def mqtt(self, path: KeyPath, body: dict[str, Any], source_id: str) -> None:
        for key in ("host", "port", "username", "password"):
            if key in body:
                self.skip(
                    (*path, key),
                    "the bridge reads its own broker: point the devices at it (user `devices`, "
                    "MQTT_DEVICES_PASSWORD) or bridge your broker to it",
                )
        meters = []
        for plug_path, plug_id, details in self.plug_entries(path, body):
            meter = self.mqtt_meter(plug_path, details, slug(plug_id))
            if meter is None:
                continue
            meter["id"] = self.plug(plug_path, plug_id, details, meter=meter["id"])
            meters.append(meter)
        if meters:
            self.out.sources.append({"type": "mqtt", "id": source_id, "meters": meters})

    def mqtt_meter(self, path: KeyPath, details: dict[str, Any], meter_id: str) -> dict[str, Any] | None:
        for key in details:
            if key not in _PLUG_KEYS | _MQTT_KEYS | set(_NOT_CARRIED):
                self.skip((*path, key), "unknown key for an mqtt plug")
        meter: dict[str, Any] = {"id": meter_id}
        low, high = _number(details.get("min_watts")), _number(details.get("max_watts"))
        off_w = _number(details.get("off_usage"), low)

        def key_of(name: str) -> str | None:
            raw = details.get(name)
            return None if raw is None else ".".join(p for p in str(raw).split("/") if p)

        power_from: str | None = None
        if "power_topic" in details:
            meter["values"] = [{"quantity": "power", "topic": str(details["power_topic"])}]
            if key_of("power_topic_keypath"):
                meter["values"][0]["key"] = key_of("power_topic_keypath")
            power_from = "power_topic"
        elif "attribute_topic" in details:
            value_min, value_max = _number(details.get("attribute_min")), _number(details.get("attribute_max"))
            value: dict[str, Any] = {"quantity": "power", "topic": str(details["attribute_topic"])}
            if key_of("attribute_topic_keypath"):
                value["key"] = key_of("attribute_topic_keypath")
            if value_max != value_min:  # watts = low + (v - min) / (max - min) x (high - low)
                factor = (high - low) / (value_max - value_min)
                value["scale"], value["offset"] = factor, low - value_min * factor
                self.skip(
                    (*path, "attribute_min"), "a scale and offset: values outside the range are not clamped", True
                )
            meter["values"] = [value]
            power_from = "attribute_topic"
        if "state_topic" in details:
            if power_from is not None:
                self.skip(
                    (*path, "state_topic"),
                    f"power comes from {power_from}; off (off_usage) would have to be reported there too",
                )
            else:
                on_off: dict[str, Any] = {"topic": str(details["state_topic"]), "on_w": high, "off_w": off_w}
                if key_of("state_topic_keypath"):
                    on_off["key"] = key_of("state_topic_keypath")
                on_off["on_values"] = [_state_value(details.get("on_state_value", "on"))]
                on_off["off_values"] = [_state_value(details.get("off_state_value", "off"))]
                meter["on_off"] = on_off
        if "values" not in meter and "on_off" not in meter:
            self.skip(path, "no power_topic, attribute_topic or state_topic: plug not carried over")
            return None
        if "timeout_duration" in details:
            meter["timeout_s"] = _number(details["timeout_duration"]) or None
            self.skip(
                (*path, "timeout_duration"),
                "timeout_s: after it the meter is unavailable (SenseLink reported off_usage)",
                changed=True,
            )
        return meter

    def aggregate(self, path: KeyPath, plug_id: str, details: dict[str, Any]) -> None:
        elements = []
        for index, element in enumerate(details.get("elements") or []):
            ours = self.ids.get(str(element))
            if ours is None:
                self.skip((*path, "elements", index), f"no plug {element!r} is defined")
            elif any(ours in (p.get("aggregate") or []) for p in self.out.plugs):
                self.skip((*path, "elements", index), f"{element!r} is already in an aggregate (SenseLink ignored it)")
            else:
                elements.append(ours)
        for key in details:
            if key not in {"alias", "mac", "device_id", "elements", *_NOT_CARRIED}:
                self.skip((*path, key), "unknown key for an aggregate plug")
        if not elements:
            self.skip(path, "an aggregate without elements: not carried over")
            return
        self.plug(path, plug_id, details, aggregate=elements)


_SOURCE_KEYS = {"hass": {"url", "auth_token"}, "mqtt": {"host", "port", "username", "password"}}


def convert(loaded: LoadedYaml) -> Conversion:
    """Our `sources` and kasa plugs from a loaded SenseLink file; every line left behind in `skipped`."""
    return _Converter(loaded).run()


def merge(base: Mapping[str, Any], conversion: Conversion) -> dict[str, Any]:
    """`base` (a bridge config as plain data) with the converted sources appended and the plugs added."""
    merged = dict(base)
    taken = {source.get("id") for source in merged.get("sources") or []}
    sources = list(merged.get("sources") or [])
    for source in conversion.sources:
        if source["id"] in taken:
            source = {**source, "id": f"{source['id']}_imported"}
        sources.append(source)
    merged["sources"] = sources
    kasa = dict(merged.get("kasa") or {})
    kasa["enabled"] = True
    kasa["plugs"] = [*(kasa.get("plugs") or []), *conversion.plugs]
    merged["kasa"] = kasa
    return merged
