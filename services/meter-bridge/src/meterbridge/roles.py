"""What each meter is for (issue 26): its role and name, chosen in Home Assistant and kept on disk.

Every meter that measures power or energy gets two entities on its HA device: a `select` for
its role (`ROLE_LABELS`: grid connection, solar, battery, EV charger, heat pump, other device,
ignore) and a `text` for its name. Until the householder chooses, the bridge proposes a role
where the device says it (`proposed_role`: an EMU-2 and a Glow CAD's electricity meter are the
grid connection, a Shelly channel that exports more than it imports is solar; anything else is
an "other device"). Choices are kept in one small JSON file in the data volume
(`discovery.roles_path`), written only when something changes, so they survive restarts and
upgrades.

The roles of all meters are published retained as one JSON document on `<base>/meters`
(`meters_document`): the `hems` integration in Home Assistant (ha-config/custom_components/hems)
wires the Energy dashboard and builds the HEMS dashboard from it. The entities are described into
the bridge's `EntityCatalog` and their states set there, like flex's: the HA sink announces and
publishes them; this sink's own MQTT connection only listens for the commands HA sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .discovery import RoleRule
from .errors import BridgeError
from .ha_entities import Device, EntityCatalog, EntityDescription, unique_id
from .model import Event, MeterDescription, Quantity, Reading
from .mqtt import MqttClient
from .mqttsession import MqttSession
from .sections import MqttContext
from .sinks import Sink

_LOGGER = logging.getLogger(__name__)

#: The store's format; a newer file is read for what this version knows.
STORE_VERSION = 1
#: Quantities that make a meter something with a role (room sensors have none).
ENERGY_QUANTITIES = frozenset({Quantity.POWER, Quantity.ENERGY_IMPORT, Quantity.ENERGY_EXPORT})
#: Longest name the text entity takes (HA's MQTT text default maximum).
MAX_NAME = 255


class Role(StrEnum):
    """What a meter measures in the home (published keys: never change once released)."""

    GRID = "grid"
    SOLAR = "solar"
    BATTERY = "battery"
    EV_CHARGER = "ev_charger"
    HEAT_PUMP = "heat_pump"
    DEVICE = "device"
    IGNORE = "ignore"


#: What the householder sees in the role select, in its order.
ROLE_LABELS: dict[Role, str] = {
    Role.GRID: "Grid connection",
    Role.SOLAR: "Solar",
    Role.BATTERY: "Battery",
    Role.EV_CHARGER: "EV charger",
    Role.HEAT_PUMP: "Heat pump",
    Role.DEVICE: "Other device",
    Role.IGNORE: "Ignore",
}
_BY_LABEL = {label.casefold(): role for role, label in ROLE_LABELS.items()}


def parse_role(payload: bytes) -> Role | None:
    """A role from a select command (its label) or a role key; None for anything else."""
    text = payload.decode("utf-8", "replace").strip()
    if text in Role.__members__.values():
        return Role(text)
    return _BY_LABEL.get(text.casefold())


def proposed_role(
    source_type: str,
    meter_id: str,
    values: Mapping[Quantity, float],
    rules: Sequence[RoleRule] = (),
    model: str | None = None,
) -> Role:
    """The role an operator's rule gives (first match), else the one the device itself suggests
    from its family and what it measures."""
    for rule in rules:
        if rule.matches(source_type, meter_id, model):
            return Role(rule.role)
    if source_type == "emu2" or (source_type == "glow" and meter_id.endswith("_electricity")):
        return Role.GRID  # a smart-meter reader measures the grid connection
    exported, imported = values.get(Quantity.ENERGY_EXPORT), values.get(Quantity.ENERGY_IMPORT)
    if source_type == "shelly" and exported is not None and exported > (imported or 0.0):
        return Role.SOLAR  # a Shelly EM channel whose energy mostly flows out: an inverter's
    return Role.DEVICE


@dataclass(slots=True)
class MeterRole:
    """What is known and chosen of one meter."""

    source_type: str = "unknown"
    name: str = ""
    #: The householder's choices (None: not chosen; the proposal and the device's name apply).
    role: Role | None = None
    chosen_name: str | None = None
    proposed: Role = Role.DEVICE
    quantities: set[Quantity] = field(default_factory=set)
    description: MeterDescription | None = None
    #: The device's own id where a peer knows the device by it (a Zigbee IEEE address).
    serial: str | None = None

    @property
    def effective_role(self) -> Role:
        """The chosen role, else the proposed one."""
        return self.role or self.proposed

    @property
    def display_name(self) -> str:
        """The chosen name, else the device's."""
        return self.chosen_name or self.name

    @property
    def has_role(self) -> bool:
        """Whether the meter measures power or energy (room sensors have no role)."""
        return bool(self.quantities & ENERGY_QUANTITIES)


def load_store(path: Path) -> dict[str, MeterRole]:
    """The meters kept in `path`; empty when there is none or it cannot be read (logged)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        _LOGGER.warning("%s: cannot read the meters' roles (%s); starting without them", path, err)
        return {}
    meters: dict[str, MeterRole] = {}
    entries = data.get("meters") if isinstance(data, dict) else None
    for meter_id, entry in (entries or {}).items():
        if not isinstance(entry, dict):
            continue
        role, proposed = entry.get("role"), entry.get("proposed")
        meters[str(meter_id)] = MeterRole(
            source_type=str(entry.get("source_type", "unknown")),
            name=str(entry.get("name") or meter_id),
            role=Role(role) if isinstance(role, str) and role in Role.__members__.values() else None,
            chosen_name=entry["chosen_name"] if isinstance(entry.get("chosen_name"), str) else None,
            proposed=Role(proposed)
            if isinstance(proposed, str) and proposed in Role.__members__.values()
            else Role.DEVICE,
            quantities={Quantity(q) for q in entry.get("quantities", ()) if q in Quantity.__members__.values()},
            serial=entry["serial"] if isinstance(entry.get("serial"), str) else None,
        )
    return meters


def store_document(meters: Mapping[str, MeterRole]) -> dict[str, Any]:
    """The JSON kept on disk."""
    return {
        "version": STORE_VERSION,
        "meters": {
            meter_id: {
                "source_type": meter.source_type,
                "name": meter.name,
                "role": meter.role.value if meter.role else None,
                "chosen_name": meter.chosen_name,
                "proposed": meter.proposed.value,
                "quantities": sorted(q.value for q in meter.quantities),
                "serial": meter.serial,
            }
            for meter_id, meter in sorted(meters.items())
        },
    }


def meters_document(
    site_id: str,
    meters: Mapping[str, MeterRole],
    flex: Sequence[EntityDescription] = (),
    zigbee2mqtt_base_topic: str = "zigbee2mqtt",
) -> dict[str, Any]:
    """What the `hems` HA integration reads (`<base>/meters`): each meter's role, name and quantities
    (and a Zigbee device's IEEE address: the integration disables Zigbee2MQTT's own entities of the
    quantities the bridge announces, so that each quantity has one entity), and the flex entities
    the bridge announces (the HEMS dashboard shows those and no others). Zigbee2MQTT's unique ids
    end in its base topic: the document says which one the Zigbee meters were found under.

    Sensor unique ids are `hems_<site>_<meter>_<quantity>`; the integration finds the entities by them.
    """
    return {
        "site": site_id,
        "zigbee2mqtt_base_topic": zigbee2mqtt_base_topic,
        "flex": [
            {
                "component": entity.component,
                "key": entity.key,
                "unique_id": unique_id(entity, site_id),
            }
            for entity in flex
        ],
        "meters": [
            {
                "id": meter_id,
                "name": meter.display_name,
                "source_type": meter.source_type,
                "role": meter.effective_role.value if meter.has_role else None,
                "quantities": sorted(q.value for q in meter.quantities),
                **({"zigbee_ieee": meter.serial} if meter.source_type == "zigbee2mqtt" and meter.serial else {}),
            }
            for meter_id, meter in sorted(meters.items())
        ],
    }


class RolesSink(Sink):
    """Keeps every meter's role and name: HA entities, the `<base>/meters` document and the store."""

    name = "roles"

    def __init__(
        self,
        context: MqttContext,
        path: Path,
        catalog: EntityCatalog,
        rules: Sequence[RoleRule] = (),
        zigbee2mqtt_base_topic: str = "zigbee2mqtt",
    ) -> None:
        super().__init__()
        self._zigbee2mqtt_base_topic = zigbee2mqtt_base_topic
        self._rules = tuple(rules)
        self._context = context
        self._path = path
        self._base = context.mqtt.base_topic
        self.catalog = catalog
        self.meters = load_store(path)
        self._saved = store_document(self.meters)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._write_failed = False
        #: The latest power and totals per meter (what proposals are made from).
        self._latest: dict[str, dict[Quantity, float]] = {}
        #: Role and name per meter, for `meter-bridge status` (the bridge hands in its stats' dict).
        self.report: dict[str, dict[str, str | None]] = {}
        self._publish()

    # -- topics ------------------------------------------------------------------------------

    def role_topic(self, meter_id: str) -> str:
        """Retained state of a meter's role select (its label)."""
        return f"{self._base}/meter/{meter_id}/role"

    def name_topic(self, meter_id: str) -> str:
        """Retained state of a meter's name text."""
        return f"{self._base}/meter/{meter_id}/name"

    @property
    def document_topic(self) -> str:
        """The retained roles document the `hems` HA integration reads."""
        return f"{self._base}/meters"

    # -- the hub side ------------------------------------------------------------------------

    async def handle(self, events: Sequence[Event]) -> None:
        """Learn meters and the quantities they measure; propose roles."""
        changed = False
        for event in events:
            if isinstance(event, MeterDescription):
                meter = self.meters.setdefault(event.meter_id, MeterRole())
                if meter.description != event:
                    meter.description = event
                    meter.source_type, meter.name, meter.serial = event.source_type, event.name, event.serial
                    changed = True
            elif isinstance(event, Reading):
                meter = self.meters.setdefault(event.meter_id, MeterRole())
                if event.quantity not in meter.quantities and event.quantity in _SHOWN:
                    meter.quantities.add(event.quantity)
                    changed = True
                if event.quantity in ENERGY_QUANTITIES:
                    self._latest.setdefault(event.meter_id, {})[event.quantity] = event.value
        if self._refresh_proposals() or changed:
            self._publish()
            self._save()

    def _refresh_proposals(self) -> bool:
        """Propose a role for each meter not chosen yet; True when a proposal changed."""
        changed = False
        for meter_id, meter in self.meters.items():
            if meter.role is None:
                model = meter.description.model if meter.description is not None else None
                proposal = proposed_role(
                    meter.source_type, meter_id, self._latest.get(meter_id, {}), self._rules, model
                )
                changed = changed or proposal is not meter.proposed
                meter.proposed = proposal
        return changed

    # -- what HA sees --------------------------------------------------------------------------

    def refresh(self) -> None:
        """Describe the entities, set their states and the report again (after `report` was handed in)."""
        self._publish()

    def _publish(self) -> None:
        entities: list[EntityDescription] = []
        for meter_id, meter in sorted(self.meters.items()):
            if not meter.has_role:
                continue
            device = (
                Device.of_meter(meter.description)
                if meter.description is not None
                else Device(meter_id, meter.name or meter_id)
            )
            # the Name entity names the meter's HA device too (the HA sink announces every entity of
            # the device with it)
            self.catalog.name_device(meter_id, meter.chosen_name)
            entities += [
                EntityDescription(
                    "select",
                    f"{meter_id}_role",
                    "Role",
                    device,
                    state_topic=self.role_topic(meter_id),
                    command_topic=f"{self.role_topic(meter_id)}/set",
                    icon="mdi:home-lightning-bolt-outline",
                    entity_category="config",
                    extra=(("options", tuple(ROLE_LABELS.values())),),
                ),
                EntityDescription(
                    "text",
                    f"{meter_id}_name",
                    "Name",
                    device,
                    state_topic=self.name_topic(meter_id),
                    command_topic=f"{self.name_topic(meter_id)}/set",
                    icon="mdi:rename",
                    entity_category="config",
                    extra=(("max", MAX_NAME),),
                ),
            ]
            self.catalog.set_state(self.role_topic(meter_id), ROLE_LABELS[meter.effective_role].encode())
            self.catalog.set_state(self.name_topic(meter_id), meter.display_name.encode())
        self.catalog.describe("roles", entities)
        self.report.clear()
        for meter_id, meter in sorted(self.meters.items()):
            role = meter.effective_role.value if meter.has_role else None
            self.report[meter_id] = {"role": role, "name": meter.display_name, "type": meter.source_type}
        document = meters_document(
            self._context.site.id, self.meters, self.catalog.of("flex"), self._zigbee2mqtt_base_topic
        )
        self.catalog.set_state(self.document_topic, json.dumps(document, separators=(",", ":")).encode())

    def _save(self) -> None:
        document = store_document(self.meters)
        if document == self._saved:
            return
        tmp = self._path.with_name(f".{self._path.name}.tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
            os.replace(tmp, self._path)
        except OSError as err:
            if not self._write_failed:
                _LOGGER.warning("%s: cannot keep the meters' roles (%s); they last until a restart", self._path, err)
            self._write_failed = True
            return
        self._saved = document

    # -- commands from HA -----------------------------------------------------------------------

    def command(self, topic: str, payload: bytes) -> None:
        """Apply a role or name HA sent (`<base>/meter/<id>/role/set`, `.../name/set`)."""
        prefix = f"{self._base}/meter/"
        if not topic.startswith(prefix):
            return
        meter_id, _, rest = topic[len(prefix) :].partition("/")
        meter = self.meters.get(meter_id)
        if meter is None:
            return
        if rest == "role/set":
            role = parse_role(payload)
            if role is None:
                _LOGGER.warning("Meter %s: unknown role %r ignored", meter_id, payload[:40])
                return
            _LOGGER.info("Meter %s is now: %s", meter_id, ROLE_LABELS[role])
            meter.role = role
        elif rest == "name/set":
            name = payload.decode("utf-8", "replace").strip()[:MAX_NAME]
            meter.chosen_name = name or None
        else:
            return
        self._publish()
        self._save()

    async def start(self) -> None:
        """Listen for HA's commands on a connection of our own."""
        self._task = asyncio.create_task(self._listen(), name="roles-mqtt")

    async def _listen(self) -> None:
        session = MqttSession(self._context.mqtt, f"{self._context.client_id}-roles", name="roles")

        async def body(client: MqttClient) -> None:
            await client.subscribe(f"{self._base}/meter/+/role/set", qos=1)
            await client.subscribe(f"{self._base}/meter/+/name/set", qos=1)
            async for message in client.messages:
                self.command(message.topic, message.payload)

        def down(error: BridgeError) -> None:
            self.stats.errors["mqtt"] += 1

        await session.run(body, on_down=down, closing=lambda: self._closing)

    async def close(self) -> None:
        """Stop listening (the store is written on every change)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


#: Quantities the roles document lists (what dashboards show); diagnostics are left out.
_SHOWN = frozenset(
    {
        Quantity.POWER,
        Quantity.ENERGY_IMPORT,
        Quantity.ENERGY_EXPORT,
        Quantity.VOLTAGE,
        Quantity.CURRENT,
        Quantity.GAS_ENERGY,
        Quantity.TEMPERATURE,
        Quantity.HUMIDITY,
        Quantity.CO2,
    }
)
