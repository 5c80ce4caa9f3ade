"""The `glow` source: a Glow CAD's electricity and gas meter messages from the bridge's broker.

The CAD publishes every ~10 s; the gas meter itself updates about every 30 min. A meter
is marked unavailable when the CAD says it left the meters' HAN, or when nothing was
heard from it for `stale_after_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ...errors import ParseError
from ...model import MeterDescription, utc_now
from ...mqtt import MqttClient
from ...sections import MqttConfig
from .. import SourceContext
from ..mqttsource import MqttSubscriptionSource
from .config import GlowSourceConfig
from .parser import MeterKind, parse_meter, parse_state, parse_topic

_NAMES: dict[MeterKind, str] = {"electricitymeter": "Electricity meter", "gasmeter": "Gas meter"}


class GlowSource(MqttSubscriptionSource[GlowSourceConfig]):
    """One Glow CAD: up to two meters, `<id>_electricity` and `<id>_gas`."""

    source_type = "glow"

    def __init__(self, config: GlowSourceConfig, mqtt: MqttConfig, client_id: str) -> None:
        super().__init__(config, mqtt, client_id)
        self.meter_ids: dict[MeterKind, str] = {}
        if config.electricity:
            self.meter_ids["electricitymeter"] = f"{config.id}_electricity"
        if config.gas:
            self.meter_ids["gasmeter"] = f"{config.id}_gas"
        self.device = config.device
        self._heard: dict[str, float] = {}  # meter id -> monotonic time of its last message
        self._described: set[str] = set()
        self._software: str | None = None
        self._hardware: str | None = None

    def describe(self, kind: MeterKind) -> MeterDescription:
        """The HA device block of one of the CAD's meters."""
        return MeterDescription(
            meter_id=self.meter_ids[kind],
            name=f"{self.config.display_name} {_NAMES[kind].lower()}" if self.config.name else _NAMES[kind],
            source_type=self.source_type,
            manufacturer="Hildebrand",
            model=f"Glow CAD {_NAMES[kind].lower()}" + (f" ({self._hardware})" if self._hardware else ""),
            sw_version=self._software,
        )

    async def run(self, ctx: SourceContext) -> None:
        """Read until cancelled; a watchdog marks silent meters unavailable."""
        watchdog = asyncio.create_task(self._watchdog(ctx), name=f"glow-watchdog-{self.id}")
        try:
            await super().run(ctx)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _watchdog(self, ctx: SourceContext) -> None:
        stale_s = self.config.stale_after_s
        while True:
            await asyncio.sleep(min(stale_s / 4, 30.0))
            now = time.monotonic()
            for meter_id, heard in self._heard.items():
                if now - heard > stale_s and ctx.stats.meters.get(meter_id):
                    ctx.log.log(logging.WARNING, "stale", "%s: nothing heard for %.0f s", meter_id, now - heard)
                    ctx.availability(meter_id, False)

    async def on_connect(self, client: MqttClient, ctx: SourceContext) -> None:
        """Subscribe to the CAD's meter and state messages."""
        device = self.device or "+"
        await client.subscribe(f"{self.config.topic_prefix}/{device}/SENSOR/+", qos=0)
        await client.subscribe(f"{self.config.topic_prefix}/{device}/STATE", qos=0)

    async def on_message(self, client: MqttClient, topic: str, payload: bytes, ctx: SourceContext) -> None:
        """Parse one meter or state message and hand on what survives the sentinel and total checks."""
        parsed = parse_topic(self.config.topic_prefix, topic)
        if parsed is None:
            return
        if self.device is None:
            self.device = parsed.device  # the first CAD heard is ours
            ctx.log.log(logging.INFO, "device", "Reading Glow CAD %s", parsed.device)
        elif parsed.device != self.device:
            ctx.error("other_device", "Ignoring a second Glow CAD %s: set `device` to choose", parsed.device)
            return
        if parsed.kind == "STATE":
            self._on_state(payload, ctx)
            return
        kind: MeterKind = "gasmeter" if parsed.kind == "gasmeter" else "electricitymeter"
        meter_id = self.meter_ids.get(kind)
        if meter_id is None:
            return  # this meter is switched off in the config
        try:
            outcome = parse_meter(kind, payload, meter_id, utc_now())
        except ParseError as err:
            ctx.error("parse", "%s: bad meter message: %s", topic, err)
            return
        for reason in outcome.dropped:
            kind_of_error = "sentinel" if "sentinel" in reason else "dropped"
            ctx.error(kind_of_error, "%s: value dropped: %s", meter_id, reason, level=logging.INFO)
        if meter_id not in self._described:
            self._described.add(meter_id)
            ctx.describe(self.describe(kind))
        self._heard[meter_id] = time.monotonic()
        if outcome.readings:
            ctx.availability(meter_id, True)
        ctx.readings(outcome.readings)

    def _on_state(self, payload: bytes, ctx: SourceContext) -> None:
        try:
            state = parse_state(payload)
        except ParseError as err:
            ctx.error("parse", "bad STATE message: %s", err)
            return
        if (state.software, state.hardware) != (self._software, self._hardware):
            self._software, self._hardware = state.software, state.hardware
            for kind in self.meter_ids:
                if self.meter_ids[kind] in self._described:
                    ctx.describe(self.describe(kind))
        if state.han_joined is False:
            for meter_id in self.meter_ids.values():
                if ctx.stats.meters.get(meter_id):
                    ctx.log.log(logging.WARNING, "han", "Glow CAD left the meters' network: %s unavailable", meter_id)
                    ctx.availability(meter_id, False)
