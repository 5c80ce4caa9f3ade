"""The `zigbee2mqtt` source: follows `bridge/devices`, subscribes to each meter's topics.

The device list is retained, so it arrives on every (re)connect; when Zigbee2MQTT
publishes a new one (a device joined, was renamed or removed) the subscriptions follow.
Totals, like every source's, pass the bridge's one rule in `SourceContext.readings`
(`sources.totals`), so Home Assistant never sees a bogus drop.
"""

from __future__ import annotations

import logging

from ...errors import ParseError
from ...model import MeterDescription, utc_now
from ...mqtt import MqttClient
from ...sections import MqttConfig
from .. import SourceContext
from ..mqttsource import MqttSubscriptionSource
from .config import Zigbee2MqttSourceConfig
from .parser import DeviceTable, Z2mDevice, parse_availability, parse_devices, parse_state


class Zigbee2MqttSource(MqttSubscriptionSource[Zigbee2MqttSourceConfig]):
    """Zigbee plugs and meters from Zigbee2MQTT; one meter per device."""

    source_type = "zigbee2mqtt"

    def __init__(self, config: Zigbee2MqttSourceConfig, mqtt: MqttConfig, client_id: str) -> None:
        super().__init__(config, mqtt, client_id)
        cfg = self.config
        self.table = DeviceTable(cfg.id, cfg.base_topic, cfg.devices, cfg.meter_ids)
        self._reported: set[str] = set()

    def describe(self, device: Z2mDevice) -> MeterDescription:
        """The HA device block of a Zigbee device (named by its friendly name)."""
        model = device.model
        if device.description and device.model:
            model = f"{device.description} ({device.model})"
        return MeterDescription(
            meter_id=self.table.meter_id(device),
            name=device.friendly_name,
            source_type=self.source_type,
            manufacturer=device.vendor,
            model=model,
            sw_version=device.software_build_id,
            # the IEEE address: the hems HA integration finds Zigbee2MQTT's own entities by it (roles.py)
            serial=device.ieee_address,
        )

    async def on_connect(self, client: MqttClient, ctx: SourceContext) -> None:
        """Subscribe to the device list; device topics follow from it."""
        # Forget the table so that every device topic is subscribed again on this connection.
        self.table.update([])
        await client.subscribe(self.table.devices_topic, qos=1)

    async def on_message(self, client: MqttClient, topic: str, payload: bytes, ctx: SourceContext) -> None:
        """Route one message to the device list, a state or an availability handler."""
        if topic == self.table.devices_topic:
            await self._on_devices(client, payload, ctx)
            return
        routed = self.table.route(topic)
        if routed is None:
            return  # a message for a device we just dropped
        device, kind = routed
        meter_id = self.table.meter_id(device)
        if kind == "availability":
            try:
                available = parse_availability(payload)
            except ParseError as err:
                ctx.error("parse", "%s: bad availability message: %s", topic, err)
                return
            self._reported.add(meter_id)  # Zigbee2MQTT tracks this device: follow it
            ctx.availability(meter_id, available)
            return
        try:
            outcome = parse_state(payload, meter_id, device.units, utc_now())
        except ParseError as err:
            ctx.error("parse", "%s: bad state message: %s", topic, err)
            return
        for reason in outcome.dropped:
            ctx.error("dropped", "%s: value dropped: %s", device.friendly_name, reason, level=logging.INFO)
        if outcome.readings and meter_id not in self._reported:
            # A meter that reports is there (as the HA sink assumes too), unless Zigbee2MQTT's
            # availability topic has spoken: then that decides. Marked once, so a retained
            # state cannot undo an `offline`.
            self._reported.add(meter_id)
            ctx.availability(meter_id, True)
        ctx.readings(outcome.readings)

    async def _on_devices(self, client: MqttClient, payload: bytes, ctx: SourceContext) -> None:
        try:
            listed = parse_devices(payload)
        except ParseError as err:
            ctx.error("parse", "%s: bad device list: %s", self.table.devices_topic, err)
            return
        for reason in listed.skipped:
            ctx.error("dropped", "%s: %s", self.table.devices_topic, reason, level=logging.INFO)
        change = self.table.update(listed.devices)
        for reason in change.skipped:
            ctx.error("skipped", "Zigbee device skipped: %s", reason)
        for topic in change.unsubscribe:
            await client.unsubscribe(topic)
        # Messages (retained state and availability among them) are handled one at a time,
        # so what arrives on the new subscriptions is handled after the descriptions below.
        for topic in change.subscribe:
            await client.subscribe(topic, qos=1)
        for device in change.removed:
            meter_id = self.table.meter_id(device)
            ctx.log.log(logging.INFO, "removed", "Zigbee device %s is no longer read", device.friendly_name)
            ctx.availability(meter_id, False)
            self._reported.discard(meter_id)
        for old, new in change.renamed:
            ctx.log.log(logging.INFO, "renamed", "Zigbee device %s renamed to %s", old.friendly_name, new.friendly_name)
            ctx.describe(self.describe(new))
        for device in change.added:
            ctx.describe(self.describe(device))
