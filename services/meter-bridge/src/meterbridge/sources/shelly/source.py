"""The `shelly` source: Shelly Gen2+ devices over MQTT, and their relays as HA switches.

Per device it subscribes to `<prefix>/online`, `<prefix>/events/rpc` and
`<prefix>/status/+`, keeps the merged full status (`ShellyDeviceParser`), asks for
`Shelly.GetStatus` over MQTT RPC when the device is (again) online or sends a delta
before any full status, and re-sends the last known values every `reemit_s`.
Availability of every meter of a device follows `<prefix>/online`; while that is unknown (never
seen, or not again since a lost connection to the broker), a status from the device makes it available.

Relays (`switch:N`) are described as Home Assistant `switch` entities (`relay_entity`; the
HA sink announces them as `homeassistant/switch/hems/hems_<id>_relay/config`), state
`hems/shelly/<id>/relay` (`ON`/`OFF`, retained), commands on `hems/shelly/<id>/relay/set`;
`<id>` is the channel's meter id, so the switch joins that meter's HA device and availability.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ...errors import BridgeError, ParseError, SourceConnectionError
from ...ha_entities import Device, EntityDescription
from ...ha_topics import Topics
from ...model import MeterDescription, utc_now
from ...mqtt import MqttClient, endpoint
from ...mqttsession import MqttSession
from ...sections import MqttContext
from .. import Source, SourceContext
from ..totals import CLOCK_FLOOR
from .config import ShellyDeviceConfig, ShellySourceConfig
from .identity import DEVICE_ID, TOPIC_ROOT
from .parser import (
    DeviceInfo,
    MeterNaming,
    ShellyDeviceParser,
    decode_frame,
    device_slug,
    meter_descriptions,
    parse_component_status,
    parse_device_info,
    parse_online,
    relay_outputs,
    status_time,
)
from .relay import ShellyMqttRpc, ShellyRelay

_LOGGER = logging.getLogger(__name__)

ON, OFF = b"ON", b"OFF"


@dataclass
class ShellyDevice:
    """What the source knows of one device."""

    prefix: str
    naming: MeterNaming
    relays: bool = True
    parser: ShellyDeviceParser = field(init=False)
    online: bool | None = None
    info: DeviceInfo | None = None
    described: dict[str, MeterDescription] = field(default_factory=dict)
    #: Relay state last published per channel on this connection.
    relay_published: dict[int, bool] = field(default_factory=dict)
    refreshing: bool = False
    refresh_wanted: bool = False
    #: The device's own time of its last status, and the monotonic time it arrived (for `reemit`).
    device_time: tuple[datetime, float] | None = None

    def clock(self, stamped: datetime | None) -> datetime:
        """The time to stamp a status with: the device's own (`stamped`) when it sent one,
        else its last one moved on by the monotonic time since, else the time of receipt."""
        now = time.monotonic()
        if stamped is not None:
            self.device_time = (stamped, now)
            return stamped
        if self.device_time is not None:
            last, at = self.device_time
            return last + timedelta(seconds=now - at)
        return utc_now()

    def __post_init__(self) -> None:
        self.parser = ShellyDeviceParser(self.naming)


class ShellySource(Source[ShellySourceConfig]):
    """Reads Shelly Gen2+ meters over MQTT; offers their relays to HA and to demand response."""

    source_type = "shelly"

    def __init__(self, config: ShellySourceConfig, bridge: MqttContext) -> None:
        super().__init__(config)
        self.bridge = bridge
        self.client_id = f"{bridge.client_id}-shelly-{config.id}"
        self.topics = Topics(bridge.mqtt.base_topic, bridge.homeassistant.discovery_prefix)
        self.devices: dict[str, ShellyDevice] = {}
        for device in config.devices:
            self._add_device(device)
        self.rpc: ShellyMqttRpc | None = None
        self._client: MqttClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._relay_commands: dict[str, tuple[ShellyDevice, int]] = {}
        #: Prefixes `discover` leaves alone (read by an explicit source: discovery.py).
        self.excluded: frozenset[str] = frozenset()

    # -- devices and relays ---------------------------------------------------------------

    def _add_device(self, device: ShellyDeviceConfig) -> ShellyDevice:
        device_id = device.id or device_slug(device.prefix)
        base = f"{self.config.id}_{device_id}"
        naming = MeterNaming(base, device.name or device_id.replace("_", " ").capitalize(), dict(device.channels))
        state = ShellyDevice(device.prefix, naming, device.relays)
        self.devices[device.prefix] = state
        return state

    def relay(self, meter_id: str) -> ShellyRelay:
        """The relay of the channel whose meter id is `meter_id`, over this source's connection.

        Raises `SourceConnectionError` while the source is not connected and `KeyError`
        for an id that is no relay channel of this source.
        """
        device, channel = self._relay_commands[meter_id] if meter_id in self._relay_commands else self._find(meter_id)
        if self.rpc is None:
            raise SourceConnectionError(f"{endpoint(self.bridge.mqtt)}: shelly source {self.id} is not connected")
        return ShellyRelay(self.rpc, device.prefix, channel)

    def _find(self, meter_id: str) -> tuple[ShellyDevice, int]:
        for device in self.devices.values():
            for channel in range(16):
                if device.naming.channel(channel) == meter_id:
                    return device, channel
        raise KeyError(meter_id)

    def _relay_state_topic(self, meter_id: str) -> str:
        return f"{self.topics.base}/shelly/{meter_id}/relay"

    # -- the connection -----------------------------------------------------------------

    async def run(self, ctx: SourceContext) -> None:
        """Follow the devices until cancelled; reconnects to the broker with backoff (`MqttSession`)."""
        log = logging.getLogger(f"meterbridge.sources.{self.id}")
        session = MqttSession(
            self.bridge.mqtt, self.client_id, name=f"Shelly source {self.id}", maximum_s=60.0, logger=log
        )

        def down(error: BridgeError) -> None:
            ctx.stats.errors["mqtt"] += 1
            for device in self.devices.values():
                self._set_online(ctx, device, None)

        await session.run(lambda client: self._session(ctx, client), on_down=down)

    async def _session(self, ctx: SourceContext, client: MqttClient) -> None:
        self.rpc = ShellyMqttRpc(client, self.client_id, self.config.rpc_timeout_s)
        self._client = client
        for device in self.devices.values():
            device.relay_published.clear()
        try:
            for prefix in list(self.devices):
                await self._subscribe_device(client, prefix)
            if self.config.discover:
                # provisioned devices (`shelly/<device id>`), and default prefixes on brokers
                # outside the release (there the broker refuses this subscription: harmless)
                await client.subscribe(f"{TOPIC_ROOT}/+/online", qos=1)
                await client.subscribe("+/online", qos=1)
            await client.subscribe(f"{self.topics.base}/shelly/+/relay/set", qos=1)
            reemit = asyncio.create_task(self._reemit_loop(ctx), name=f"shelly-{self.id}-reemit")
            try:
                async for message in client.messages:
                    await self._dispatch(ctx, client, message.topic, message.payload)
            finally:
                reemit.cancel()
        finally:
            self.rpc.fail_all(SourceConnectionError(f"{endpoint(self.bridge.mqtt)}: connection lost"))
            self.rpc = None
            self._client = None
            for task in list(self._tasks):
                task.cancel()

    async def _subscribe_device(self, client: MqttClient, prefix: str) -> None:
        for suffix in ("online", "events/rpc", "status/+"):
            await client.subscribe(f"{prefix}/{suffix}", qos=1)

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reemit_loop(self, ctx: SourceContext) -> None:
        # Shelly sends only changes: a steady load would otherwise look stale.
        while True:
            await asyncio.sleep(self.config.reemit_s)
            for device in self.devices.values():
                if device.online is not False and device.parser.has_full:
                    ctx.readings(device.parser.current(device.clock(None)))

    # -- incoming messages ------------------------------------------------------------------

    async def _dispatch(self, ctx: SourceContext, client: MqttClient, topic: str, payload: bytes) -> None:
        try:
            if self.rpc is not None and self.rpc.owns(topic):
                self.rpc.handle_reply(topic, payload)
            elif topic.startswith(f"{self.topics.base}/shelly/") and topic.endswith("/relay/set"):
                meter_id = topic[len(self.topics.base) + len("/shelly/") : -len("/relay/set")]
                self._spawn(self._relay_command(ctx, meter_id, payload), f"shelly-{self.id}-relay-{meter_id}")
            elif topic.endswith("/online"):
                await self._on_online(ctx, client, topic[: -len("/online")], payload)
            elif topic.endswith("/events/rpc"):
                frame_device = self.devices.get(topic[: -len("/events/rpc")])
                if frame_device is not None:
                    await self._on_frame(ctx, client, frame_device, payload)
            elif "/status/" in topic:
                prefix, _, component = topic.rpartition("/status/")
                status_device = self.devices.get(prefix)
                if status_device is not None:
                    delta = parse_component_status(component, payload)
                    await self._apply(ctx, client, status_device, "delta", delta)
        except ParseError as err:
            ctx.error("parse", "Shelly %s: bad message on %s: %s", self.id, topic, err)

    async def _on_online(self, ctx: SourceContext, client: MqttClient, prefix: str, payload: bytes) -> None:
        device = self.devices.get(prefix)
        if device is None:
            if prefix in self.excluded or not (
                self.config.discover and DEVICE_ID.match(prefix.removeprefix(f"{TOPIC_ROOT}/"))
            ):
                return
            device = self._add_device(ShellyDeviceConfig(prefix=prefix))
            _LOGGER.info("Shelly source %s: discovered %s", self.id, prefix)
            await self._subscribe_device(client, prefix)
        online = parse_online(payload)
        was = device.online
        self._set_online(ctx, device, online)
        if online and was is not True:
            self._request_status(ctx, device)

    def _set_online(self, ctx: SourceContext, device: ShellyDevice, online: bool | None) -> None:
        if online is not None and device.online is not None and online != device.online:
            _LOGGER.log(
                logging.INFO if online else logging.WARNING,
                "Shelly %s is %s",
                device.prefix,
                "online" if online else "offline",
            )
        device.online = online
        for meter_id in device.described:
            ctx.availability(meter_id, bool(online))

    async def _on_frame(self, ctx: SourceContext, client: MqttClient, device: ShellyDevice, payload: bytes) -> None:
        frame = decode_frame(payload)
        if frame.kind == "full":
            await self._apply(ctx, client, device, "full", frame.params)
        elif frame.kind == "delta":
            await self._apply(ctx, client, device, "delta", frame.params)

    async def _apply(
        self, ctx: SourceContext, client: MqttClient, device: ShellyDevice, kind: str, params: dict[str, Any]
    ) -> None:
        if kind == "delta" and not device.parser.has_full:
            self._request_status(ctx, device)  # a delta alone is not the whole picture
        stamped = status_time(params)
        if stamped is not None and stamped < CLOCK_FLOOR:
            stamped = None  # its clock is not set yet (a reboot before SNTP): go on from the last one
        if stamped is not None and device.device_time is not None and stamped < device.device_time[0]:
            if "ts" in params:
                # A notification sent again after newer ones (QoS 1 redelivery): merging it would put
                # old values back into the status later deltas build on. The readings rule drops it too.
                ctx.error(
                    "stale_frame",
                    "Shelly %s: a status from %s came after a newer one: ignored",
                    device.prefix,
                    stamped.isoformat(),
                    level=logging.DEBUG,
                )
                return
            stamped = device.device_time[0]  # `Shelly.GetStatus` has whole seconds (`sys.unixtime`) only
        ts = device.clock(stamped)
        readings, issues = device.parser.full(params, ts) if kind == "full" else device.parser.delta(params, ts)
        for issue in issues:
            kind_name = "unknown_component" if issue.startswith("unknown component") else "bad_field"
            ctx.error(kind_name, "Shelly %s: %s", device.prefix, issue)
        if device.online is None:
            # It talks, so it is there. Said to the hub too: after a lost connection (`down` made its
            # meters unavailable) a device whose `online` the broker no longer holds (a restart without
            # persistence) never sends it again, and its meters would stay unavailable while it reads.
            self._set_online(ctx, device, True)
        self._describe(ctx, device)
        ctx.readings(readings)
        await self._publish_relays(ctx, client, device)

    def _describe(self, ctx: SourceContext, device: ShellyDevice) -> None:
        for description in meter_descriptions(device.parser.status, device.naming, device.info):
            if device.described.get(description.meter_id) != description:
                device.described[description.meter_id] = description
                ctx.describe(description)
                ctx.availability(description.meter_id, bool(device.online))

    def _request_status(self, ctx: SourceContext, device: ShellyDevice) -> None:
        device.refresh_wanted = True
        if not device.refreshing:
            device.refreshing = True
            self._spawn(self._refresh(ctx, device), f"shelly-{self.id}-refresh")

    async def _refresh(self, ctx: SourceContext, device: ShellyDevice) -> None:
        # One refresh at a time per device; a request made meanwhile (the device went
        # away and came back while we asked) runs once more afterwards.
        try:
            while device.refresh_wanted and self.rpc is not None and self._client is not None:
                device.refresh_wanted = False
                rpc, client = self.rpc, self._client
                try:
                    if device.info is None:
                        device.info = parse_device_info(await rpc.call(device.prefix, "Shelly.GetDeviceInfo"))
                    status = await rpc.call(device.prefix, "Shelly.GetStatus")
                    if not isinstance(status, dict):
                        raise ParseError("Shelly.GetStatus result is not an object")
                    await self._apply(ctx, client, device, "full", status)
                except BridgeError as err:  # BrokerError included
                    ctx.error("rpc", "Shelly %s: could not read the full status: %s", device.prefix, err)
        finally:
            device.refreshing = False

    # -- relays as Home Assistant switches ----------------------------------------------------

    async def _publish_relays(self, ctx: SourceContext, client: MqttClient, device: ShellyDevice) -> None:
        if not device.relays:
            return
        outputs = relay_outputs(device.parser.status)
        for channel, output in outputs.items():
            meter_id = device.naming.channel(channel)
            self._relay_commands[meter_id] = (device, channel)
            if meter_id not in device.described:
                device.described[meter_id] = MeterDescription(
                    meter_id, device.naming.channel_name(channel), "shelly", manufacturer="Shelly"
                )
                ctx.describe(device.described[meter_id])
                ctx.availability(meter_id, bool(device.online))
            if device.relay_published.get(channel) != output:
                await client.publish(self._relay_state_topic(meter_id), ON if output else OFF, qos=1, retain=True)
                device.relay_published[channel] = output
        relays = [self.relay_entity(device.described[device.naming.channel(channel)]) for channel in outputs]
        ctx.announce(relays, part=device.prefix)

    def relay_entity(self, meter: MeterDescription) -> EntityDescription:
        """The HA `switch` of the relay on meter `meter`, on that meter's device."""
        state_topic = self._relay_state_topic(meter.meter_id)
        return EntityDescription(
            "switch",
            f"{meter.meter_id}_relay",
            "Relay",
            Device.of_meter(meter),
            state_topic=state_topic,
            command_topic=f"{state_topic}/set",
            availability=(self.topics.meter_availability(meter.meter_id),),
            extra=(("payload_on", ON.decode()), ("payload_off", OFF.decode())),
        )

    async def _relay_command(self, ctx: SourceContext, meter_id: str, payload: bytes) -> None:
        command = payload.strip().upper()
        if command not in (ON, OFF) or meter_id not in self._relay_commands:
            ctx.error("relay_command", "Shelly %s: ignored relay command %r for %s", self.id, payload[:10], meter_id)
            return
        try:
            await self.relay(meter_id).set(command == ON)
        except BridgeError as err:
            ctx.error("relay", "Shelly %s: switching %s failed: %s", self.id, meter_id, err)
