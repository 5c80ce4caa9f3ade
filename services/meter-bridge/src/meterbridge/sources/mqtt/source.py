"""The `mqtt` source: subscribes to each meter's topics on the bridge's broker and reads them.

Parsing is `parser.MeterParser`; availability is `parser.Tracker` (availability topic, first
reading, `timeout_s`), checked on every message and by a watchdog task so that a device that
goes silent is marked unavailable without any message arriving. Totals, like every
source's, pass the bridge's one rule in `SourceContext.readings` (`sources.totals`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ...errors import ParseError
from ...model import MeterDescription, utc_now
from ...mqtt import MqttClient
from ...sections import MqttConfig
from .. import SourceContext
from ..mqttsource import MqttSubscriptionSource
from .config import MqttMeterConfig, MqttSourceConfig
from .parser import MeterParser, Tracker

#: The watchdog looks this often (at most) for meters that went quiet; a timeout is met within it.
_MAX_CHECK_S = 5.0
#: A meter without a timeout that has not reported this long after the start is reported as silent.
_SILENT_AFTER_S = 300.0
_ACL_HINT = "on the appliance the bridge can read only devices/#, tele/# and stat/# of generic devices"

_MANUFACTURERS = {"tasmota": "Tasmota", "esphome": "ESPHome", "openevse": "OpenEVSE"}


class MqttMeter:
    """One meter read from MQTT topics: its parser, its availability tracker, and what a message does to them.

    Shared by the `mqtt` source (configured meters) and the `tasmota` source (found ones);
    `dropped_level` is the level a value the parser dropped is logged at.
    """

    def __init__(self, config: MqttMeterConfig, dropped_level: int = logging.INFO) -> None:
        self.config = config
        self.parser = MeterParser(config.plan())
        self.tracker = Tracker(self.parser.plan)
        self.dropped_level = dropped_level

    def handle(self, topic: str, payload: bytes, ctx: SourceContext) -> None:
        """Take one message on one of this meter's topics; bad input is counted in `ctx`, never raised."""
        plan, meter_id, now = self.parser.plan, self.config.id, time.monotonic()
        if topic == plan.availability_topic:
            online = self.parser.availability(payload)
            if online is None:
                ctx.error("parse", "%s: unknown availability payload %r", topic, payload[:40])
            else:
                ctx.availability(meter_id, self.tracker.announced(online, now))
            if topic not in plan.topics and (plan.on_off is None or plan.on_off.topic != topic):
                return
        try:
            outcome = self.parser.parse(topic, payload, utc_now())
        except ParseError as err:
            ctx.error("parse", "%s: bad message for %s: %s", topic, meter_id, err)
            return
        for reason in outcome.dropped:
            ctx.error("dropped", "%s: value dropped: %s", meter_id, reason, level=self.dropped_level)
        if not outcome.readings:
            return
        ctx.availability(meter_id, self.tracker.reading(now))
        # totals pass the bridge's one rule in SourceContext.readings, like every source's
        ctx.readings(outcome.readings)


class MqttSource(MqttSubscriptionSource[MqttSourceConfig]):
    """Generic JSON/number meters over MQTT (Tasmota, ESPHome, OpenEVSE presets, or any topic)."""

    source_type = "mqtt"

    def __init__(self, config: MqttSourceConfig, mqtt: MqttConfig, client_id: str) -> None:
        super().__init__(config, mqtt, client_id)
        self.meters = [MqttMeter(meter) for meter in config.meters]
        self.routes: dict[str, list[MqttMeter]] = {}
        for meter in self.meters:
            for topic in meter.parser.plan.subscriptions:
                self.routes.setdefault(topic, []).append(meter)
        timeouts = [m.tracker.timeout_s for m in self.meters if m.tracker.timeout_s is not None]
        self.check_s = min([_MAX_CHECK_S, *(t / 4 for t in timeouts)])

    def describe(self, meter: MqttMeterConfig) -> MeterDescription:
        """The HA device of a meter (the preset names the maker)."""
        return MeterDescription(
            meter_id=meter.id,
            name=meter.display_name,
            source_type=self.source_type,
            manufacturer=_MANUFACTURERS.get(meter.preset or ""),
            model=meter.device,
            via=None,
        )

    async def run(self, ctx: SourceContext) -> None:
        """Describe the meters, then read until cancelled, with the timeout watchdog beside."""
        for meter in self.meters:
            ctx.describe(self.describe(meter.config))
        watchdog = asyncio.create_task(self._watch(ctx), name=f"mqtt-source-{self.id}-watchdog")
        try:
            await super().run(ctx)
        finally:
            watchdog.cancel()

    async def _watch(self, ctx: SourceContext) -> None:
        started, silent_reported = time.monotonic(), set[str]()
        while True:
            await asyncio.sleep(self.check_s)
            now = time.monotonic()
            for meter in self.meters:
                meter_id = meter.config.id
                if meter.tracker.last_reading is not None:
                    ctx.availability(meter_id, meter.tracker.available(now))
                elif meter_id not in silent_reported and now - started > (meter.tracker.timeout_s or _SILENT_AFTER_S):
                    # Never heard: a wrong topic, a device not yet pointed at the broker, or a topic
                    # the broker's ACL keeps from the bridge (which Mosquitto does not say).
                    silent_reported.add(meter_id)
                    topics = ", ".join(meter.parser.plan.subscriptions)
                    ctx.error("silent", "meter %s: nothing received on %s (%s)", meter_id, topics, _ACL_HINT)

    async def on_connect(self, client: MqttClient, ctx: SourceContext) -> None:
        """Subscribe to every meter's topics (again after a reconnect).

        Mosquitto 2.0.11 grants a subscription its ACL forbids and then delivers nothing, so a
        refused topic cannot be told here: `_watch` names a meter that is never heard instead.
        """
        for topic in self.routes:
            await client.subscribe(topic, qos=1)

    async def on_message(self, client: MqttClient, topic: str, payload: bytes, ctx: SourceContext) -> None:
        """Hand the message to each meter read from this topic."""
        for meter in self.routes.get(topic, ()):
            meter.handle(topic, payload, ctx)
