"""The EMU-2 / RAVEn source: opens the port, asks for pushes, parses, reopens when unplugged.

On open it sends `initialize` (resets the device's own command parser), asks for device
info, the meter list and the connection status, then `set_schedule` so the device
*pushes* demand every `demand_interval_s` and summation every `summation_interval_s`.
If no demand arrives for three intervals it polls `get_instantaneous_demand` once per
interval until one does. When the port vanishes (USB unplugged) or reads fail the meter
is marked unavailable and the port is reopened with jittered backoff until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from ...backoff import Backoff
from ...errors import SourceConnectionError
from ...logutil import redact
from ...model import MeterDescription, Quantity, Reading
from ...usbserial import UsbId, find_usb_serial
from .. import Source, SourceContext
from .config import Emu2SourceConfig
from .parser import (
    ConnectionStatus,
    DeviceInfo,
    Emu2Event,
    Emu2Parser,
    Garbled,
    MeterList,
    OtherMeter,
    PriceInfo,
    UnknownFragment,
    normalise_mac,
)
from .transport import Emu2Transport

#: The USB ids of Rainforest's devices, as Home Assistant's rainforest_raven integration matches
#: them (home-assistant/core homeassistant/components/rainforest_raven/manifest.json): the EMU-2's
#: Cypress 04b4:0003 is generic, so the manufacturer must say Rainforest too.
EMU2_USB_IDS = (UsbId("04b4", "0003", "*rainforest*"), UsbId("0403", "8a28", "*rainforest*"))

_LOGGER = logging.getLogger(__name__)

#: Demand intervals without a demand before the source polls for one.
POLL_AFTER_INTERVALS = 3
#: A port silent this long (and at least `SILENCE_INTERVALS` demand intervals) is reopened.
MIN_SILENCE_S = 30.0
SILENCE_INTERVALS = 6
#: How often a source found by default looks for an EMU-2 that is not plugged in yet (a sysfs scan).
FIND_EVERY_S = 2.0
#: Unknown fragment names remembered for "log once per name" (bounded: names come off the wire).
_MAX_UNKNOWN_NAMES = 100


class Emu2Source(Source[Emu2SourceConfig]):
    """Reads one smart meter through a Rainforest EMU-2 or RAVEn on a serial port."""

    source_type = "emu2"

    def __init__(self, config: Emu2SourceConfig, *, wait_for_device: bool = False) -> None:
        super().__init__(config)
        #: Found by default (discovery.py): no meter exists, and nothing is logged, until an
        #: EMU-2 or RAVEn is plugged in; from then on it is shown unavailable when unplugged.
        self.wait_for_device = wait_for_device
        #: Zigbee link strength to the meter (0-100 %) from the last ConnectionStatus.
        self.link_strength_pct: int | None = None
        #: Times the port was opened, and demand polls sent (push did not arrive).
        self.sessions = 0
        self.polls = 0
        self._device: DeviceInfo | None = None
        self._meter_mac = normalise_mac(config.meter_mac) if config.meter_mac else None
        self._described: MeterDescription | None = None
        self._unknown_names: set[str] = set()
        self._currency: str | None = None
        self._last_demand = 0.0

    def _describe(self, ctx: SourceContext) -> None:
        device = self._device
        description = MeterDescription(
            meter_id=self.config.id,
            name=self.config.display_name,
            source_type=self.source_type,
            manufacturer=(device.manufacturer if device else None) or "Rainforest Automation",
            model=(device.model if device else None) or "EMU-2",
            sw_version=device.fw_version if device else None,
            hw_version=device.hw_version if device else None,
            serial=self._meter_mac,
        )
        if description != self._described:
            self._described = description
            ctx.describe(description)

    def _port(self) -> str:
        """The configured port, else the /dev path of the EMU-2 or RAVEn plugged in now."""
        if self.config.port is not None:
            return self.config.port
        found = find_usb_serial(EMU2_USB_IDS)
        if found is None:
            wanted = ", ".join(str(usb_id) for usb_id in EMU2_USB_IDS)
            raise SourceConnectionError(f"no EMU-2 or RAVEn plugged in (USB {wanted})")
        return str(found)

    async def run(self, ctx: SourceContext) -> None:
        """Read until cancelled, reopening the port with backoff whenever it goes away."""
        port = self.config.port or "the EMU-2 found by its USB ids"
        if self.wait_for_device:
            await self._wait_for_device()
        self._describe(ctx)
        backoff = Backoff(initial=0.5, maximum=30.0)
        failures = 0
        while True:
            received = False
            try:
                transport = await Emu2Transport.open(self._port())
                try:
                    self.sessions += 1
                    if failures:
                        _LOGGER.info("EMU-2 on %s is back after %d failed attempts", port, failures)
                    _LOGGER.debug("Opened %s", port)
                    async for _ in self._session(ctx, transport):
                        if not received:
                            received = True
                            failures = 0
                            backoff.reset()
                finally:
                    transport.close()
            except SourceConnectionError as err:
                ctx.availability(self.config.id, False)
                failures += 1
                if failures == 1:
                    _LOGGER.warning("EMU-2 %s unavailable: %s; retrying", port, err)
                else:
                    _LOGGER.debug("EMU-2 %s attempt %d failed: %s", port, failures, err)
                ctx.stats.errors["connection"] += 1
                await asyncio.sleep(backoff.next_delay())

    async def _wait_for_device(self) -> None:
        """Return once an EMU-2 or RAVEn is plugged in (looked up every `FIND_EVERY_S`)."""
        # polled: sysfs offers no event a process without udev could wait on
        while find_usb_serial(EMU2_USB_IDS) is None:  # noqa: ASYNC110
            await asyncio.sleep(FIND_EVERY_S)
        _LOGGER.info("EMU-2 found on USB: reading it as meter %s", self.config.id)

    async def _session(self, ctx: SourceContext, transport: Emu2Transport) -> AsyncIterator[None]:
        """Yield once per chunk that held at least one fragment; raise `SourceConnectionError` when the port fails."""
        parser = Emu2Parser(self.config.id, self.config.meter_mac)
        loop = asyncio.get_running_loop()
        self._last_demand = loop.time()
        silence_s = max(MIN_SILENCE_S, SILENCE_INTERVALS * self.config.demand_interval_s)
        commands = asyncio.create_task(self._commands(transport), name=f"emu2-{self.config.id}-commands")
        try:
            while True:
                data = await transport.read(silence_s)
                fragments = parser.fragments
                junk = parser.junk_bytes
                self._handle(ctx, parser.feed(data), loop.time())
                if parser.junk_bytes > junk:
                    ctx.error(
                        "junk",
                        "EMU-2 on %s: skipped %d junk bytes",
                        transport.port,
                        parser.junk_bytes - junk,
                        level=logging.DEBUG,
                    )
                if commands.done():
                    commands.result()  # a write failure ends the session like a read failure
                if parser.fragments > fragments:
                    yield
        finally:
            commands.cancel()
            with contextlib.suppress(asyncio.CancelledError, SourceConnectionError):
                await commands

    async def _commands(self, transport: Emu2Transport) -> None:
        cfg = self.config
        meter = {"MeterMacId": f"0x{self._meter_mac}"} if self._meter_mac else {}
        await transport.send("initialize")
        await transport.send("get_device_info")
        await transport.send("get_meter_list")
        await transport.send("get_connection_status")
        await transport.send(
            "set_schedule", **meter, Event="demand", Frequency=f"0x{cfg.demand_interval_s:04X}", Enabled="Y"
        )
        await transport.send(
            "set_schedule", **meter, Event="summation", Frequency=f"0x{cfg.summation_interval_s:04X}", Enabled="Y"
        )
        await transport.send("get_current_summation_delivered", **meter)
        await transport.send("get_current_price", **meter)
        loop = asyncio.get_running_loop()
        interval = cfg.demand_interval_s
        # the device has no schedule for period usage (set_schedule knows time, price, demand,
        # summation, message): poll it, at the demand interval's granularity
        next_period = loop.time()
        while True:
            if cfg.period_interval_s and loop.time() >= next_period:
                next_period = loop.time() + cfg.period_interval_s
                await transport.send("get_current_period_usage", **meter)
                await transport.send("get_last_period_usage", **meter)
            await asyncio.sleep(interval)
            if loop.time() - self._last_demand >= POLL_AFTER_INTERVALS * interval:
                self.polls += 1
                _LOGGER.debug(
                    "No demand pushed by %s for %d s: polling", transport.port, POLL_AFTER_INTERVALS * interval
                )
                await transport.send("get_instantaneous_demand", **meter)

    def _handle(self, ctx: SourceContext, events: list[Emu2Event], now: float) -> None:
        readings: list[Reading] = []
        for event in events:
            if isinstance(event, Reading):
                readings.append(event)
                if event.quantity is Quantity.POWER:
                    self._last_demand = now
                if event.quantity is not Quantity.LINK_QUALITY:
                    ctx.availability(self.config.id, True)  # a meter that reads is there
            elif isinstance(event, ConnectionStatus):
                self._connection(ctx, event)
            elif isinstance(event, DeviceInfo):
                self._device = event
                self._describe(ctx)
            elif isinstance(event, MeterList):
                if self._meter_mac is None and event.meter_macs:
                    self._meter_mac = event.meter_macs[0]
                self._describe(ctx)
            elif isinstance(event, PriceInfo):
                if event.currency != self._currency:
                    self._currency = event.currency
                    _LOGGER.info("EMU-2 %s: the meter prices in %s", self.config.id, event.currency)
            elif isinstance(event, UnknownFragment):
                ctx.stats.errors["unknown_fragment"] += 1
                if event.name not in self._unknown_names and len(self._unknown_names) < _MAX_UNKNOWN_NAMES:
                    self._unknown_names.add(event.name)
                    _LOGGER.info("EMU-2 %s: ignoring unknown fragment <%s>", self.config.id, event.name)
            elif isinstance(event, OtherMeter):
                ctx.error(
                    "other_meter",
                    "EMU-2 %s: ignoring %s of meter %s",
                    self.config.id,
                    event.name,
                    redact(event.meter_mac),
                    level=logging.DEBUG,
                )
            elif isinstance(event, Garbled):
                ctx.error(
                    "garbled", "EMU-2 %s: dropped a garbled <%s> fragment: %s", self.config.id, event.name, event.reason
                )
        if readings:
            ctx.readings(readings)

    def _connection(self, ctx: SourceContext, status: ConnectionStatus) -> None:
        self.link_strength_pct = status.link_strength_pct
        was = ctx.stats.meters.get(self.config.id)
        if status.connected != was:
            level = logging.INFO if status.connected else logging.WARNING
            _LOGGER.log(level, "EMU-2 %s: meter link %s (%s)", self.config.id, status.status, status.description or "-")
        ctx.availability(self.config.id, status.connected)
