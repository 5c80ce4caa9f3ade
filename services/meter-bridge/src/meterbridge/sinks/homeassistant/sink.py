"""The Home Assistant sink: keeps the latest state of every meter and publishes it, and
announces every entity the bridge offers HA.

`handle` only updates in-memory state; one background task owns the MQTT connection
and publishes what changed, so a slow or absent broker never holds up the hub.

Rate limiting per meter: a state is published at most every `min_interval_s`, except
that a power change larger than `power_deadband_w`, a new quantity or the first state
go out at once. Each published state carries the latest value of every quantity, so
energy totals are always exact (a skipped intermediate state loses nothing).

The recorded state (`<base>/meter/<id>/recorded`, what HA's recorder keeps: see discovery.py)
goes out once per `recorded_interval_s` of the wall clock, `RECORDED_LEAD_S` before each multiple
of it, so that HA, which stamps a state with its arrival, files it in the 5-minute period that
ends at that multiple; and at once when a meter brings a quantity HA has not seen there yet.

Discovery is announced here and nowhere else: meter sensors from the meters the hub brings,
everything else (Shelly relays, utility account status, replication health, flex) from the
bridge's `EntityCatalog`, all through `ha_entities.discovery_config`. After every (re)connect
and whenever HA sends `online` on `homeassistant/status`, everything is announced again; an
entity its owner no longer describes gets an empty retained config (HA removes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from ...asyncutil import wait_event
from ...errors import BridgeError, BrokerError
from ...ha_entities import EntityCatalog, discovery_config
from ...model import Event, MeterAvailability, MeterDescription, Point, Quantity, Reading
from ...mqtt import MqttClient, Will, endpoint
from ...mqttsession import MqttSession
from ...sections import MqttContext
from .. import Sink
from .discovery import AVERAGED, Topics, average_discovery_message, discovery_message, state_payload

_LOGGER = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"

#: How long before each step boundary the recorded state is published: more than a state takes
#: to reach HA's state machine on a busy Pi, so that it lands before the boundary, not after.
RECORDED_LEAD_S = 2.0


@dataclass(slots=True)
class TimeWeightedMean:
    """The mean of a value held from each reading's arrival to the next, over a window."""

    start: float | None = None
    value: float | None = None
    since: float = 0.0
    area: float = 0.0

    def add(self, value: float, now: float) -> None:
        """A new reading at monotonic time `now`."""
        if self.value is None or self.start is None:
            self.start = now
        else:
            self.area += self.value * (now - self.since)
        self.value = value
        self.since = now

    def take(self, now: float) -> float | None:
        """The mean since the window started (None before any reading); the next window starts now."""
        if self.value is None or self.start is None:
            return None
        span = now - self.start
        area = self.area + self.value * (now - self.since)
        mean = area / span if span > 0 else self.value
        self.start = self.since = now
        self.area = 0.0
        return mean


def next_recorded_at(wall: float, step: float, lead: float = RECORDED_LEAD_S) -> float:
    """Wall-clock time of the next recorded publication after `wall`: `lead` before a multiple of `step`."""
    return (math.floor((wall + lead) / step) + 1) * step - lead


@dataclass(slots=True)
class MeterState:
    """What the sink knows of one meter and what it has published of it."""

    description: MeterDescription
    values: dict[Quantity, float] = field(default_factory=dict)
    ts: datetime | None = None
    available: bool | None = None
    #: Quantities whose discovery config went out on the current connection.
    announced: set[Quantity] = field(default_factory=set)
    state_dirty: bool = False
    availability_dirty: bool = False
    published_at: float | None = None
    published_power: float | None = None
    #: The name the meter's device was last announced with, when the householder chose one (roles).
    chosen_name: str | None = None
    #: A reading came since the last recorded state.
    recorded_dirty: bool = False
    #: Quantities the recorded topic has carried (a new one goes out at once).
    recorded: set[Quantity] = field(default_factory=set)
    averages: dict[Quantity, TimeWeightedMean] = field(default_factory=dict)


def due_at(state: MeterState, min_interval_s: float, deadband_w: float) -> float | None:
    """Monotonic time at which `state` should next be published (None: nothing to publish)."""
    if not state.state_dirty:
        return None
    if state.published_at is None or min_interval_s <= 0:
        return 0.0
    if set(state.values) - state.announced:
        return 0.0  # a quantity HA has not seen yet: show it at once
    power = state.values.get(Quantity.POWER)
    if power is not None and (state.published_power is None or abs(power - state.published_power) > deadband_w):
        return 0.0
    return state.published_at + min_interval_s


class HomeAssistantSink(Sink):
    """Publishes discovery, availability and retained JSON state for Home Assistant."""

    name = "homeassistant"

    def __init__(self, config: MqttContext, catalog: EntityCatalog | None = None) -> None:
        super().__init__()
        self._config = config
        self._topics = Topics(config.mqtt.base_topic, config.homeassistant.discovery_prefix)
        self._meters: dict[str, MeterState] = {}
        self._wake = asyncio.Event()
        self._rediscover = False
        #: The entities besides meter sensors: described by sources and flex, announced here.
        self.catalog = EntityCatalog() if catalog is None else catalog
        self.catalog.listen(self._catalog_changed)
        self._catalog_dirty = True
        #: Discovery topic -> payload of the catalog's entities published on this connection.
        self._catalog_announced: dict[str, bytes] = {}
        #: Every catalog entity's topic announced since the start (to remove it when it goes).
        self._catalog_known: set[str] = set()
        #: State topic -> payload of the catalog's states published on this connection.
        self._catalog_states: dict[str, bytes] = {}
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.stats.connected = False
        self.stats.gauges["states_published"] = 0
        self.stats.gauges["recorded_states_published"] = 0
        self._recorded_at = next_recorded_at(time.time(), config.homeassistant.recorded_interval_s)

    # -- the hub side: cheap, never touches the network ---------------------------------

    def _meter(self, meter_id: str) -> MeterState:
        state = self._meters.get(meter_id)
        if state is None:
            state = MeterState(MeterDescription(meter_id=meter_id, name=meter_id, source_type="unknown"))
            self._meters[meter_id] = state
        return state

    async def handle(self, events: Sequence[Event]) -> None:
        """Fold events into the latest state of each meter and wake the publisher."""
        now = time.monotonic()
        for event in events:
            if isinstance(event, Point):
                continue  # InfluxDB's alone (flex deliveries reach HA through the flex state)
            state = self._meter(event.meter_id)
            if isinstance(event, Reading):
                state.values[event.quantity] = event.value
                state.recorded_dirty = True
                if event.quantity in AVERAGED:
                    state.averages.setdefault(event.quantity, TimeWeightedMean()).add(event.value, now)
                if state.ts is None or event.ts > state.ts:
                    state.ts = event.ts
                state.state_dirty = True
                if state.available is None:  # a meter that reads is there
                    state.available = True
                    state.availability_dirty = True
            elif isinstance(event, MeterAvailability):
                if state.available != event.available:
                    state.available = event.available
                    state.availability_dirty = True
            elif isinstance(event, MeterDescription) and event != state.description:
                state.description = event
                state.announced.clear()  # device details changed: re-send discovery
                state.state_dirty = state.state_dirty or bool(state.values)
        self._wake.set()

    def _catalog_changed(self) -> None:
        self._catalog_dirty = True
        self._wake.set()

    # -- the network side ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the connection task."""
        self._task = asyncio.create_task(self._connection_loop(), name="ha-sink-mqtt")

    async def close(self) -> None:
        """Publish pending states and `offline`, then disconnect."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            return
        if not self.stats.connected:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _connection_loop(self) -> None:
        will = Will(self._topics.bridge_availability, OFFLINE, qos=1, retain=True)
        session = MqttSession(self._config.mqtt, self._config.client_id, name="Home Assistant sink", will=will)

        def up() -> None:
            self.stats.connected = True

        def down(error: BridgeError) -> None:
            self.stats.connected = False
            for state in self._meters.values():
                state.announced.clear()
            if not self._closing:
                self.stats.errors["mqtt"] += 1

        await session.run(self._session, on_up=up, on_down=down, closing=lambda: self._closing)

    async def _session(self, client: MqttClient) -> None:
        # Everything HA must see again after a (re)connect: it may have restarted too.
        self._forget_announced()
        for state in self._meters.values():
            state.announced.clear()
            state.availability_dirty = state.available is not None
            state.state_dirty = state.state_dirty or bool(state.values)
        await client.subscribe(self._topics.ha_status, qos=1)
        await client.publish(self._topics.bridge_availability, ONLINE, qos=1, retain=True)
        listener = asyncio.create_task(self._listen(client), name="ha-sink-listen")
        # The listener is the first to learn that the connection is gone (its iteration ends with
        # BrokerError); wake the publisher then, or it would notice only at its next publish.
        listener.add_done_callback(lambda _: self._wake.set())
        try:
            await self._publish_loop(client, listener)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, BrokerError):
                await listener

    async def _listen(self, client: MqttClient) -> None:
        async for message in client.messages:
            if message.topic == self._topics.ha_status and message.payload == ONLINE:
                _LOGGER.info("Home Assistant came online: re-publishing discovery")
                self._rediscover = True
                self._wake.set()

    async def _publish_loop(self, client: MqttClient, listener: asyncio.Task[None]) -> None:
        ha = self._config.homeassistant
        while True:
            self._wake.clear()
            if listener.done() and not self._closing:
                listener.result()  # raises the connection's BrokerError: the session reconnects
                raise BrokerError(f"MQTT broker {endpoint(self._config.mqtt)}: the subscription ended")
            if self._rediscover:
                self._rediscover = False
                self._forget_announced()
                for state in self._meters.values():
                    state.announced.clear()
                    state.availability_dirty = state.available is not None
                    state.state_dirty = state.state_dirty or bool(state.values)
            if self._catalog_dirty:
                await self._announce_catalog(client)
            now = time.monotonic()
            wall = time.time()
            step_due = wall >= self._recorded_at or self._closing
            if wall >= self._recorded_at:
                self._recorded_at = next_recorded_at(wall, ha.recorded_interval_s)
            next_due = now + (self._recorded_at - wall)
            for meter_id, state in list(self._meters.items()):
                await self._publish_discovery(client, state)
                if state.availability_dirty and state.available is not None:
                    state.availability_dirty = False
                    payload = ONLINE if state.available else OFFLINE
                    await client.publish(self._topics.meter_availability(meter_id), payload, qos=1, retain=True)
                if state.recorded_dirty and (step_due or not set(state.values) <= state.recorded):
                    await self._publish_recorded(client, meter_id, state, now)
                due = due_at(state, ha.min_interval_s, ha.power_deadband_w)
                if due is None:
                    continue
                if due <= now or self._closing:
                    await self._publish_state(client, meter_id, state, now)
                else:
                    next_due = min(next_due, due)
            if self._closing:
                await client.publish(self._topics.bridge_availability, OFFLINE, qos=1, retain=True)
                return
            await wait_event(self._wake, next_due - time.monotonic())

    def _forget_announced(self) -> None:
        self._catalog_announced.clear()
        self._catalog_states.clear()
        self._catalog_dirty = True

    async def _announce_catalog(self, client: MqttClient) -> None:
        """Publish what changed in the catalog since the last announcement, remove what left it."""
        self._catalog_dirty = False
        for topic, state in self.catalog.states().items():  # plain retained topics: even without HA
            if self._catalog_states.get(topic) != state:
                await client.publish(topic, state, qos=1, retain=True)
                self._catalog_states[topic] = state
        if not self._config.homeassistant.enabled:
            return
        wanted: dict[str, bytes] = {}
        for entity in self.catalog.entities():
            chosen = self.catalog.device_name(entity.device.key)
            if chosen is not None:  # the whole device says the name the householder gave it
                entity = replace(entity, device=replace(entity.device, name=chosen))
            topic, payload = discovery_config(entity, self._topics, self._config.site.id)
            wanted[topic] = json.dumps(payload).encode()
        for topic in sorted(self._catalog_known - wanted.keys()):
            await client.publish(topic, b"", qos=1, retain=True)
            self._catalog_known.discard(topic)
            self._catalog_announced.pop(topic, None)
        for topic, body in wanted.items():
            if self._catalog_announced.get(topic) != body:
                await client.publish(topic, body, qos=1, retain=True)
                self._catalog_announced[topic] = body
                self._catalog_known.add(topic)

    async def _publish_discovery(self, client: MqttClient, state: MeterState) -> None:
        if not self._config.homeassistant.enabled:
            return
        # the name the householder gave the meter (roles' Name entity) renames its HA device: all its
        # sensors are announced again with it
        chosen = self.catalog.device_name(state.description.meter_id)
        if chosen != state.chosen_name:
            state.chosen_name = chosen
            state.announced.clear()
        description = state.description
        if state.chosen_name is not None:
            description = replace(description, name=state.chosen_name)
        for quantity in [q for q in state.values if q not in state.announced]:
            topic, payload = discovery_message(
                self._topics, self._config.site.id, description, quantity, self._config.site.currency
            )
            await client.publish(topic, json.dumps(payload).encode(), qos=1, retain=True)
            if quantity in AVERAGED:
                topic, payload = average_discovery_message(self._topics, self._config.site.id, description, quantity)
                await client.publish(topic, json.dumps(payload).encode(), qos=1, retain=True)
            state.announced.add(quantity)

    async def _publish_state(self, client: MqttClient, meter_id: str, state: MeterState, now: float) -> None:
        state.state_dirty = False
        await client.publish(
            self._topics.meter_state(meter_id), state_payload(state.values, state.ts), qos=0, retain=True
        )
        state.published_at = now
        state.published_power = state.values.get(Quantity.POWER)
        self.stats.gauges["states_published"] += 1

    async def _publish_recorded(self, client: MqttClient, meter_id: str, state: MeterState, now: float) -> None:
        state.recorded_dirty = False
        state.recorded = set(state.values)
        averages = {quantity: mean.take(now) for quantity, mean in state.averages.items()}
        body = state_payload(
            state.values,
            state.ts,
            {quantity: round(mean, 3) for quantity, mean in averages.items() if mean is not None},
        )
        await client.publish(self._topics.meter_recorded(meter_id), body, qos=0, retain=True)
        self.stats.gauges["recorded_states_published"] += 1
