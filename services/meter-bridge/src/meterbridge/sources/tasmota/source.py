"""The `tasmota` source: follows Tasmota's own discovery messages and reads every energy monitor announced.

A device's `config` says where its telemetry is (`tele/<topic>/SENSOR`, `tele/<topic>/LWT`); its
`sensors` message says whether it has an energy monitor (`ENERGY`) and how many channels. Each
channel becomes a meter read like a `type: mqtt` meter with the `tasmota` preset (`mqtt.source`:
`MqttMeter`, its `MeterParser` and `Tracker`). A device that withdraws its discovery, or whose LWT says `Offline`,
is shown unavailable and kept (its history with it); it is never removed from Home Assistant.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ...errors import ParseError
from ...model import MeterDescription, Quantity
from ...mqtt import MqttClient
from ...sections import MqttConfig
from .. import SourceContext
from ..mqtt.config import TASMOTA_TIMEOUT_S, MqttMeterConfig, MqttValueConfig
from ..mqtt.source import MqttMeter
from ..mqttsource import MqttSubscriptionSource
from .config import TasmotaSourceConfig
from .parser import TasmotaDevice, energy_channels, parse_config

#: The ENERGY keys read, as the `tasmota` preset reads them (mqtt/config.py `_tasmota`).
_KEYS = (
    ("Power", Quantity.POWER),
    ("Total", Quantity.ENERGY_IMPORT),
    ("Voltage", Quantity.VOLTAGE),
    ("Current", Quantity.CURRENT),
    ("Factor", Quantity.POWER_FACTOR),
)
#: How often (at most) the watchdog looks for meters that went quiet.
_CHECK_S = 5.0


class _Meter(MqttMeter):
    """A channel's meter, read as a `type: mqtt` meter is (its LWT is never also its SENSOR topic)."""

    def __init__(self, config: MqttMeterConfig, device: TasmotaDevice) -> None:
        super().__init__(config, dropped_level=logging.DEBUG)
        self.device = device


class TasmotaSource(MqttSubscriptionSource[TasmotaSourceConfig]):
    """Tasmota energy monitors found through `tasmota/discovery/#`; one meter per channel."""

    source_type = "tasmota"

    def __init__(self, config: TasmotaSourceConfig, mqtt: MqttConfig, client_id: str) -> None:
        super().__init__(config, mqtt, client_id)
        self.devices: dict[str, TasmotaDevice] = {}
        self.channels: dict[str, int] = {}
        self.meters: dict[str, _Meter] = {}
        self.routes: dict[str, list[_Meter]] = {}
        wanted = config.devices
        self._wanted = None if wanted is None else {name.upper() for name in wanted} | set(wanted)

    def meter_id(self, device: TasmotaDevice, channel: int | None) -> str:
        """`<source id>_<mac>` (and `_<n>` for channel n of a multi-channel meter)."""
        base = f"{self.id}_{device.mac.lower()}"
        return base if channel is None else f"{base}_{channel}"

    def _wants(self, device: TasmotaDevice) -> bool:
        if device.topic in self.config.exclude:
            return False
        return self._wanted is None or device.mac in self._wanted or device.topic in self._wanted

    async def run(self, ctx: SourceContext) -> None:
        """Read until cancelled, with a watchdog that marks quiet meters unavailable."""
        watchdog = asyncio.create_task(self._watch(ctx), name=f"tasmota-{self.id}-watchdog")
        try:
            await super().run(ctx)
        finally:
            watchdog.cancel()

    async def _watch(self, ctx: SourceContext) -> None:
        while True:
            await asyncio.sleep(_CHECK_S)
            now = time.monotonic()
            for meter_id, meter in list(self.meters.items()):
                if meter.tracker.last_reading is not None:
                    ctx.availability(meter_id, meter.tracker.available(now))

    async def on_connect(self, client: MqttClient, ctx: SourceContext) -> None:
        """Subscribe to the discovery messages, and to the telemetry of every meter already known."""
        prefix = self.config.discovery_prefix
        await client.subscribe(f"{prefix}/+/config", qos=1)
        await client.subscribe(f"{prefix}/+/sensors", qos=1)
        for topic in self.routes:
            await client.subscribe(topic, qos=1)

    async def on_message(self, client: MqttClient, topic: str, payload: bytes, ctx: SourceContext) -> None:
        """Route one message: a discovery message, or telemetry of a known meter."""
        prefix = f"{self.config.discovery_prefix}/"
        if topic.startswith(prefix) and topic.count("/") == prefix.count("/") + 1:
            mac, _, kind = topic[len(prefix) :].partition("/")
            try:
                if kind == "config":
                    await self._on_config(client, mac.upper(), parse_config(payload), ctx)
                elif kind == "sensors":
                    self.channels[mac.upper()] = energy_channels(payload)
                    await self._follow(client, mac.upper(), ctx)
            except ParseError as err:
                ctx.error("parse", "%s: bad discovery message: %s", topic, err)
            return
        for meter in self.routes.get(topic, ()):
            meter.handle(topic, payload, ctx)

    async def _on_config(self, client: MqttClient, mac: str, device: TasmotaDevice | None, ctx: SourceContext) -> None:
        if device is None:
            # Withdrawn (SetOption19 changed, or the device reset): keep the meters and their
            # history in Home Assistant, shown unavailable.
            for meter_id, meter in self.meters.items():
                if meter.device.mac == mac:
                    ctx.availability(meter_id, False)
            return
        self.devices[mac] = device
        await self._follow(client, mac, ctx)

    async def _follow(self, client: MqttClient, mac: str, ctx: SourceContext) -> None:
        """Read the device's energy monitor once both its config and its sensors are known."""
        device, channels = self.devices.get(mac), self.channels.get(mac, 0)
        if device is None or channels == 0 or not self._wants(device):
            return
        for channel in [None] if channels == 1 else list(range(channels)):
            meter_id = self.meter_id(device, channel)
            known = self.meters.get(meter_id)
            if known is not None and known.device == device:
                continue
            config = self._meter_config(device, meter_id, channel)
            meter = _Meter(config, device)
            if known is not None:  # moved to another topic: drop the old routes
                for routed in self.routes.values():
                    routed[:] = [m for m in routed if m is not known]
            self.meters[meter_id] = meter
            for topic in meter.parser.plan.subscriptions:
                if topic not in self.routes:
                    await client.subscribe(topic, qos=1)
                self.routes.setdefault(topic, []).append(meter)
            if known is None:
                logging.getLogger(f"meterbridge.sources.{self.id}").info(
                    "Tasmota %s (%s) found: meter %s", device.name, device.topic, meter_id
                )
            name = device.name if channel is None else f"{device.name} {channel + 1}"
            ctx.describe(
                MeterDescription(
                    meter_id=meter_id,
                    name=name,
                    source_type=self.source_type,
                    manufacturer="Tasmota",
                    model=device.model,
                    sw_version=device.sw_version,
                )
            )

    @staticmethod
    def _meter_config(device: TasmotaDevice, meter_id: str, channel: int | None) -> MqttMeterConfig:
        suffix = "" if channel is None else f".{channel}"
        return MqttMeterConfig(
            id=meter_id,
            name=device.name,
            state_topic=f"{device.tele}SENSOR",
            values=[MqttValueConfig(quantity=quantity, key=f"ENERGY.{key}{suffix}") for key, quantity in _KEYS],
            availability_topic=f"{device.tele}LWT",
            payload_available=device.online,
            payload_not_available=device.offline,
            timeout_s=TASMOTA_TIMEOUT_S,
        )
