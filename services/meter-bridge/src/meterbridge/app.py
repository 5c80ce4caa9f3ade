"""The running bridge: sources -> hub -> sinks, the health endpoint, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .backoff import Backoff
from .config import BridgeConfig
from .discovery import discovered_sources
from .flex.config import FlexConfig
from .flex.controller import FlexController
from .flex.entities import FlexTopics, flex_entities
from .flex.mqttio import FlexMqtt
from .flex.relays import ShellyRelays, build_actuators, uses_shelly
from .ha_entities import EntityCatalog
from .health import HealthServer
from .hub import Hub
from .model import utc_now
from .roles import RolesSink
from .sections import MqttContext
from .sinks import Sink
from .sinks.homeassistant import HomeAssistantSink
from .sinks.kasa.sink import KasaSink
from .sources import Source, SourceContext
from .sources.registry import build_source
from .sources.shelly.firmware import firmware_entities
from .sources.totals import ReadingRules
from .stats import BridgeStats, SourceStats

_LOGGER = logging.getLogger(__name__)

#: SIGTERM to exit: balena gives a container 10 s; we promise 5.
SHUTDOWN_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class SinkKind:
    """One kind of sink: its name and how the config builds it (None: the config leaves it off).

    Its settings are its own section of `BridgeConfig` (`kasa`, `influx`, `flex`, ...), typed there.
    """

    name: str
    #: Builds it from the config; entities it offers Home Assistant go to the catalog.
    build: Callable[[BridgeConfig, EntityCatalog], Sink | None]


def _influx(config: BridgeConfig, catalog: EntityCatalog) -> Sink | None:
    if config.influx is None or not config.influx.enabled:
        return None
    from .sinks.influx import InfluxSink  # imported here: influxdb-client is slow to import

    return InfluxSink(config.mqtt_context, config.influx, config.spool, catalog=catalog)


def build_flex(
    context: MqttContext, flex: FlexConfig, catalog: EntityCatalog, clock: Callable[[], datetime] = utc_now
) -> FlexController:
    """The flex controller with its parts: store, actuators (Shelly RPC session), MQTT I/O, VEN, HA entities."""
    topics = FlexTopics(context.mqtt.base_topic, flex.event_topic, flex.manual_topic)
    mqtt = FlexMqtt(context.mqtt, f"{context.client_id}-flex", topics)
    shelly = ShellyRelays(context)
    actuators = build_actuators(flex.assets, shelly, mqtt.publish, mqtt)
    controller = FlexController(flex, topics, actuators, clock=clock, site_id=context.site.id)
    mqtt.attach(controller)
    controller.outlet = mqtt
    controller.parts.append(mqtt)
    if uses_shelly(flex.assets):
        controller.parts.append(shelly)
    if flex.openadr.enabled:
        from .flex.openadr import FlexVen  # imported here: openleadr is slow to import

        controller.parts.append(FlexVen(context.site.id, flex, controller))
    catalog.describe("flex", flex_entities(topics, flex.assets))
    return controller


def _flex(config: BridgeConfig, catalog: EntityCatalog) -> Sink | None:
    return build_flex(config.mqtt_context, config.flex, catalog) if config.flex.enabled else None


def _roles(config: BridgeConfig, catalog: EntityCatalog) -> Sink | None:
    found = config.found_by_default
    if not found.roles or not config.homeassistant.enabled:
        return None
    return RolesSink(config.mqtt_context, found.roles_path, catalog, found.role_rules, found.zigbee2mqtt_base_topic)


#: Every sink, in the order the hub feeds them: the one place a sink is registered.
SINKS: tuple[SinkKind, ...] = (
    SinkKind("homeassistant", lambda config, catalog: HomeAssistantSink(config.mqtt_context, catalog)),
    SinkKind("kasa", lambda config, catalog: KasaSink(config.kasa) if config.kasa.enabled else None),
    SinkKind("influx", _influx),
    SinkKind("flex", _flex),
    SinkKind("roles", _roles),
)


def build_sinks(config: BridgeConfig, catalog: EntityCatalog | None = None) -> list[Sink]:
    """The sinks the config enables, from the sink table `SINKS`; they describe entities into `catalog`."""
    catalog = EntityCatalog() if catalog is None else catalog
    built = (kind.build(config, catalog) for kind in SINKS)
    return [sink for sink in built if sink is not None]


def history_sinks(config: BridgeConfig | None) -> list[Sink]:
    """Sinks that take historical readings: the InfluxDB sink when `config` enables one.

    It gets its own spool file beside the bridge's (`<spool>-import.sqlite`) so a one-shot
    import never shares a SQLite spool with a running bridge. The Home Assistant MQTT sink
    is deliberately not used: it publishes live state, and hours-old totals would show as
    the meter's current value (HA gets the history as statistics instead).
    """
    if config is None or config.influx is None or not config.influx.enabled:
        return []
    from .sinks.influx import InfluxSink  # imported here: influxdb-client is slow to import

    spool = config.spool.model_copy(
        update={"path": config.spool.path.with_name(f"{config.spool.path.stem}-import{config.spool.path.suffix}")}
    )
    influx = config.influx.model_copy(update={"replication_poll_s": 0.0})  # no monitor for a one-shot run
    return [InfluxSink(config.mqtt_context, influx, spool)]


class Bridge:
    """One bridge process: builds sources and sinks from the config and runs them."""

    def __init__(self, config: BridgeConfig, sinks: list[Sink] | None = None) -> None:
        self.config = config
        self.stats = BridgeStats(started=utc_now())
        #: Every entity offered to Home Assistant besides meter sensors (the HA sink announces them).
        self.catalog = next((s.catalog for s in sinks or () if isinstance(s, HomeAssistantSink)), EntityCatalog())
        self.sinks = build_sinks(config, self.catalog) if sinks is None else sinks
        for sink in self.sinks:
            self.stats.sinks[sink.name] = sink.stats
        self.hub = Hub(self.sinks, config.hub.queue_size)
        for sink in self.sinks:
            if isinstance(sink, FlexController):
                sink.publish = self.hub.publish  # delivery points go to InfluxDB with the meters (issue 27)
        self.sources: list[Source[Any]] = [build_source(source, config.mqtt_context) for source in config.sources]
        #: The one rule every source's readings pass (`sources.totals`), its state on the data volume.
        self.rules = ReadingRules.from_file(
            config.totals.path, config.totals.save_interval_s, config.totals.max_power_kw
        )
        # what the home has beyond what the config names (issue 26): found by default
        found = discovered_sources(config.found_by_default, config.sources, config.mqtt_context)
        self._found_by_default = {source.id for source in found}
        self.sources += found
        for sink in self.sinks:
            if isinstance(sink, RolesSink):
                sink.report = self.stats.roles
                sink.refresh()
        self.health: HealthServer | None = None
        self._source_tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._shut_down = False

    async def __aenter__(self) -> Bridge:
        """`async with Bridge(config) as bridge:` starts it and shuts it down on the way out."""
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.shutdown()

    def request_stop(self) -> None:
        """Ask `run` to shut down (signal handlers call this)."""
        self._stop.set()

    async def _run_source(self, source: Source[Any], ctx: SourceContext) -> None:
        # A source that raises is restarted with backoff: it never takes the bridge down.
        backoff = Backoff(initial=1.0, maximum=60.0)
        while True:
            try:
                await source.run(ctx)
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                delay = backoff.next_delay()
                ctx.error(
                    "crash", "Source %s failed (%r); restarting in %.0f s", source.id, err, delay, level=logging.ERROR
                )
                await asyncio.sleep(delay)

    async def start(self) -> None:
        """Start sinks, hub, sources and the health endpoint."""
        for sink in self.sinks:
            await sink.start()
        self.hub.start()
        for source in self.sources:
            stats = SourceStats(source_type=source.source_type, stale_after_s=source.config.stale_after_s)
            stats.found_by_default = source.id in self._found_by_default
            self.stats.sources[source.id] = stats
            ctx = SourceContext(source.id, stats, self.hub.publish, self.catalog, self.rules, source.historical)
            self._source_tasks.append(asyncio.create_task(self._run_source(source, ctx), name=f"source-{source.id}"))
        firmware = firmware_entities(self.config, self.catalog)  # Shelly update entities in HA (issue 21)
        if firmware is not None:
            self._source_tasks.append(asyncio.create_task(firmware.run(), name="shelly-firmware"))
        if self.config.health.enabled:
            self.health = HealthServer(self.stats, self.config.health.host, self.config.health.port)
            await self.health.start()
        _LOGGER.info("Bridge started: %d sources, sinks %s", len(self.sources), ", ".join(s.name for s in self.sinks))

    async def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop sources, deliver what is queued, flush and close sinks, within `timeout`.

        Safe to call more than once: only the first call does anything.
        """
        if self._shut_down:
            return
        self._shut_down = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for task in self._source_tasks:
            task.cancel()
        for task in self._source_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.rules.close()
        # Half the time to hand queued events to the sinks, the rest to flush them.
        if not await self.hub.drain(timeout / 2):
            _LOGGER.warning("Shutdown: some queued events were not handed to sinks in time")
        await self.hub.stop()
        for sink in self.sinks:
            remaining = max(0.1, deadline - loop.time())
            try:
                await asyncio.wait_for(sink.close(), remaining)
            except TimeoutError:
                _LOGGER.warning("Shutdown: sink %s did not flush in time", sink.name)
        if self.health is not None:
            await self.health.stop()
        _LOGGER.info("Bridge stopped")

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (or `request_stop`), then shut down cleanly."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.request_stop)
        async with self:
            await self._stop.wait()
