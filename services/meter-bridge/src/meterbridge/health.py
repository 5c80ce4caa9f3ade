"""The local health endpoint: `/healthz` (JSON) and `/metrics` (Prometheus text).

`meter-bridge status` reads `/healthz` and exits 1 while a source is stale; the container's
healthcheck is `meter-bridge status --live`, which only asks that the bridge answers (a missing
meter must not restart the bridge). A source is healthy while its last reading is younger than
its `stale_after_s`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .model import utc_now
from .mqtt import READER_STATS
from .stats import BridgeStats


def health_report(stats: BridgeStats, now: datetime | None = None) -> dict[str, Any]:
    """The `/healthz` document: per source age, counts and errors; overall `healthy`."""
    now = now or utc_now()
    sources: dict[str, Any] = {}
    healthy = True
    for source_id, source in stats.sources.items():
        age = (now - source.last_reading).total_seconds() if source.last_reading else None
        # A source that has not read yet is given its stale period from start-up.
        since = age if age is not None else (now - stats.started).total_seconds()
        # a family looked for by default that has found nothing yet is not stale: the home may have none
        source_healthy = since <= source.stale_after_s or (source.found_by_default and not source.meters)
        healthy = healthy and source_healthy
        sources[source_id] = {
            "type": source.source_type,
            "healthy": source_healthy,
            "last_reading_age_s": None if age is None else round(age, 1),
            "readings": source.readings,
            "errors": dict(source.errors),
            "meters": dict(source.meters),
            "found_by_default": source.found_by_default,
        }
    sinks = {
        name: {
            "connected": sink.connected,
            "received": sink.received,
            "dropped": sink.dropped,
            "queued": sink.queued,
            "errors": dict(sink.errors),
            **sink.gauges,
        }
        for name, sink in stats.sinks.items()
    }
    return {
        "healthy": healthy,
        "version": __version__,
        "uptime_s": round((now - stats.started).total_seconds(), 1),
        "sources": sources,
        "roles": {meter_id: dict(role) for meter_id, role in stats.roles.items()},
        "sinks": sinks,
    }


class _StatsCollector(Collector):
    def __init__(self, stats: BridgeStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        now = utc_now()
        readings = CounterMetricFamily("meterbridge_source_readings", "Readings emitted", labels=["source"])
        errors = CounterMetricFamily("meterbridge_source_errors", "Source errors by kind", labels=["source", "kind"])
        age = GaugeMetricFamily("meterbridge_source_last_reading_age_seconds", "Age of last reading", labels=["source"])
        available = GaugeMetricFamily("meterbridge_meter_available", "1 when the meter is reachable", labels=["meter"])
        for source_id, source in self._stats.sources.items():
            readings.add_metric([source_id], source.readings)
            for kind, count in source.errors.items():
                errors.add_metric([source_id, kind], count)
            if source.last_reading is not None:
                age.add_metric([source_id], (now - source.last_reading).total_seconds())
            for meter_id, is_available in source.meters.items():
                available.add_metric([meter_id], 1.0 if is_available else 0.0)
        received = CounterMetricFamily("meterbridge_sink_events", "Events handed to the sink", labels=["sink"])
        dropped = CounterMetricFamily("meterbridge_sink_dropped", "Events dropped: queue full", labels=["sink"])
        sink_errors = CounterMetricFamily("meterbridge_sink_errors", "Sink errors by kind", labels=["sink", "kind"])
        connected = GaugeMetricFamily("meterbridge_sink_connected", "1 when connected", labels=["sink"])
        queued = GaugeMetricFamily("meterbridge_sink_queued", "Events waiting for the sink", labels=["sink"])
        gauges = GaugeMetricFamily("meterbridge_sink_gauge", "Sink-specific figures", labels=["sink", "name"])
        for name, sink in self._stats.sinks.items():
            received.add_metric([name], sink.received)
            dropped.add_metric([name], sink.dropped)
            queued.add_metric([name], sink.queued)
            if sink.connected is not None:
                connected.add_metric([name], 1.0 if sink.connected else 0.0)
            for kind, count in sink.errors.items():
                sink_errors.add_metric([name, kind], count)
            for gauge, value in sink.gauges.items():
                gauges.add_metric([name, gauge], value)
        paused = CounterMetricFamily(
            "meterbridge_mqtt_reader_paused",
            "Times an MQTT client stopped reading its socket because its incoming queue was full "
            "(back-pressure: the bridge is not keeping up, messages wait at the broker)",
            value=READER_STATS.pauses,
        )
        yield from (readings, errors, age, available, received, dropped, sink_errors, connected, queued, gauges)
        yield paused


class HealthServer:
    """Serves `/healthz` and `/metrics` for one bridge."""

    def __init__(self, stats: BridgeStats, host: str, port: int) -> None:
        self._stats = stats
        self._host = host
        self._port = port
        self._registry = CollectorRegistry()
        self._registry.register(_StatsCollector(stats))
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        report = health_report(self._stats)
        return web.json_response(report, status=200 if report["healthy"] else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._registry), content_type="text/plain", charset="utf-8")

    async def start(self) -> None:
        """Listen; `port` holds the bound port afterwards (useful with port 0)."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
