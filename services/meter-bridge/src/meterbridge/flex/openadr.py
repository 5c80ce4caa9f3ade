"""The OpenADR 2.0b VEN (openleadr's `OpenADRClient`) as an event source of the flex controller.

- registration and polling are openleadr's (`client.run()`); a failed registration is
  retried with backoff;
- `on_event`/`on_update_event` map the event to a `FlexEvent` and answer optIn/optOut
  from what the controller decides (participation, mode, asset availability);
  cancelled and modified events go the same way;
- telemetry: a TELEMETRY_USAGE report of the site's and each metered asset's real power (W);
- settlement (issue 27): once an event is settled, the same report gives, per
  settlement period the household took part in, the delivered energy (Wh, report type
  `deltaUsage`, reading type `Derived`) of the site and each metered asset by the configured
  method; each interval starts at its period's start, so the VTN matches them to its event
  by time (baselines and actuals are in the per-event files and InfluxDB);
- a householder opt-out during an event is reported with `oadrCreateOpt` (EiOpt) and an
  updated `oadrCreatedEvent` (EiEvent) carrying optOut: openleadr's own VTN implements
  only the latter, other VTNs the former.
Messages are signed and checked when `cert`, `key`, `ca_file` and `vtn_fingerprint` are set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from openleadr import OpenADRClient, enums, utils

from ..asyncutil import stop_tasks
from ..backoff import Backoff
from .config import FlexConfig
from .events import FlexEvent
from .policy import Direction
from .settlement import EventDelivery

_LOGGER = logging.getLogger(__name__)

SOURCE = "openadr"


def event_from_openadr(event: dict[str, Any]) -> FlexEvent | None:
    """Map an openleadr event dict to a `FlexEvent`; None for a signal flex does not act on.

    SIMPLE levels 1-3 ask for a turn-down of level/3 of the flexible power (level 0: no
    request). LOAD_DISPATCH with signal type `delta` gives the change in W: negative
    turns down, positive turns up. The highest interval payload of the first signal wins.
    """
    descriptor = event["event_descriptor"]
    period = event["active_period"]
    start: datetime = period["dtstart"]
    duration: timedelta = period["duration"]
    signals = event.get("event_signals") or []
    if isinstance(signals, dict):
        signals = signals.get("event_signals", [])
    cancelled = descriptor.get("event_status") == enums.EVENT_STATUS.CANCELLED
    target_w: float | None = None
    level: int | None = None
    direction = Direction.DOWN
    for signal in signals:
        name = str(signal.get("signal_name", "")).upper()
        payloads = [float(i.get("signal_payload", 0)) for i in signal.get("intervals", [])]
        if not payloads:
            continue
        if name == "SIMPLE":
            level = int(max(payloads))
            break
        if name == "LOAD_DISPATCH" and signal.get("signal_type") == "delta":
            value = max(payloads, key=abs)
            direction = Direction.UP if value > 0 else Direction.DOWN
            target_w = abs(value)
            break
    if not cancelled and (level is None or level <= 0) and not target_w:
        return None
    return FlexEvent(
        event_id=str(descriptor["event_id"]),
        source=SOURCE,
        direction=direction,
        start=start,
        end=start + duration,
        target_w=target_w,
        level=None if target_w else max(1, min(3, level or 1)),
        modification=int(descriptor.get("modification_number") or 0),
        cancelled=cancelled,
    )


class MeteredAsset(Protocol):
    """An asset as the VEN reports it."""

    @property
    def power_w(self) -> float | None:
        """The asset's last metered power (W), None when unknown."""


class VenController(Protocol):
    """What the VEN needs of the flex controller (so the two modules do not import each other)."""

    @property
    def site_import_w(self) -> float | None:
        """The site's import power (W, export negative), None when unknown."""

    @property
    def assets(self) -> Mapping[str, MeteredAsset]:
        """The controlled assets by id."""

    @property
    def delivery_listeners(self) -> list[Callable[[EventDelivery, str], Awaitable[None]]]:
        """Called with (delivery, method) when an event is settled."""

    @property
    def opt_listeners(self) -> list[Callable[[FlexEvent, str], Awaitable[None]]]:
        """Called with (event, "optIn"/"optOut") when the householder changes an answer."""

    def submit_event(self, event: FlexEvent) -> bool:
        """Hand an event to the controller; True when it takes part."""


class FlexVen:
    """Runs an openleadr VEN that feeds events to `controller` and reports back."""

    def __init__(self, site_id: str, flex: FlexConfig, controller: VenController) -> None:
        adr = flex.openadr
        self._controller = controller
        signed = adr.cert is not None and adr.key is not None
        self.client = OpenADRClient(
            ven_name=adr.ven_name or f"hems-{site_id}",
            vtn_url=adr.vtn_url,
            cert=str(adr.cert) if adr.cert else None,
            key=str(adr.key) if adr.key else None,
            ca_file=str(adr.ca_file) if adr.ca_file else None,
            vtn_fingerprint=adr.vtn_fingerprint,
            ven_id=adr.ven_id,
            show_fingerprint=False,
            disable_signature=not signed,
        )
        self.client.add_handler("on_event", self.on_event)
        self.client.add_handler("on_update_event", self.on_event)
        rate = timedelta(seconds=adr.report_interval_s)
        # one telemetry report: the site's power and each asset's, as resources of it
        resources = [("site", self._site_power)]
        resources += [(asset.id, self._asset_power(asset.id)) for asset in flex.assets]
        for resource_id, callback in resources:
            self.client.add_report(
                callback=callback,
                resource_id=resource_id,
                measurement="REAL_POWER",
                unit="W",
                scale="none",
                sampling_rate=rate,
                report_duration=timedelta(hours=1),
                report_specifier_id="hems-telemetry",
            )
        # settled deliveries: queued per (resource, kind) until openleadr samples the report
        self.delivery_queue: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
        metered = ["site", *(asset.id for asset in flex.assets if asset.meter_id)]
        kinds = [(resource, enums.REPORT_TYPE.DELTA_USAGE) for resource in metered]
        for resource_id, report_type in kinds:
            self.delivery_queue[resource_id, report_type] = []
            self.client.add_report(
                callback=self._queued(resource_id, report_type),
                resource_id=resource_id,
                measurement="ENERGY_REAL",
                unit="Wh",
                scale="none",
                report_type=report_type,
                reading_type=enums.READING_TYPE.DERIVED,
                sampling_rate=rate,
                report_duration=timedelta(hours=1),
                # one report for telemetry and deliveries: openleadr 0.5.36's VEN collects the r_ids
                # of every report request in one list (`requested_r_ids` in `create_report`), so a
                # second report would be sampled with the first one's r_ids and fail
                report_specifier_id="hems-telemetry",
            )
        controller.delivery_listeners.append(self.queue_delivery)
        controller.opt_listeners.append(self.report_opt)
        self.opts_sent: list[tuple[str, str]] = []
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Register and poll in the background (a `FlexPart` of the controller)."""
        self._task = asyncio.create_task(self.run(), name="flex-openadr")

    async def close(self) -> None:
        """Stop the background task, then polling and the HTTP session."""
        if self._task is not None:
            await stop_tasks([self._task])
        await self.stop()

    def _site_power(self) -> list[tuple[datetime, float]]:
        value = self._controller.site_import_w
        return [] if value is None else [(datetime.now(UTC), value)]

    def _asset_power(self, asset_id: str) -> Any:
        def callback() -> list[tuple[datetime, float]]:
            value = self._controller.assets[asset_id].power_w
            return [] if value is None else [(datetime.now(UTC), value)]

        return callback

    def _queued(self, resource_id: str, report_type: str) -> Any:
        def callback() -> list[tuple[datetime, float]]:
            queue = self.delivery_queue[resource_id, report_type]
            values, queue[:] = list(queue), []
            return values

        return callback

    async def queue_delivery(self, delivery: EventDelivery, method: str) -> None:
        """Queue a settled event's counted periods (Wh) for the report (energyReal, deltaUsage)."""
        for resource in delivery.resources:
            if resource.method != method:
                continue
            counted = [p for p in resource.periods if p.counted]
            deltas = self.delivery_queue.get((resource.resource, enums.REPORT_TYPE.DELTA_USAGE))
            if deltas is not None:
                deltas.extend((p.start, round((p.delivered_kwh or 0.0) * 1000, 1)) for p in counted)
        _LOGGER.info("OpenADR: delivery of event %s queued for the VTN", delivery.event.event_id)

    async def on_event(self, event: dict[str, Any]) -> str:
        """openleadr's handler: map, submit, answer `optIn`/`optOut`."""
        try:
            flex_event = event_from_openadr(event)
        except (KeyError, TypeError, ValueError) as err:
            _LOGGER.warning("OpenADR event not understood (%r): opting out", err)
            return "optOut"
        if flex_event is None:
            _LOGGER.info(
                "OpenADR event %s asks for nothing flex acts on: opting out", event["event_descriptor"]["event_id"]
            )
            return "optOut"
        accepted = self._controller.submit_event(flex_event)
        return "optIn" if accepted else "optOut"

    async def report_opt(self, event: FlexEvent, opt_type: str) -> None:
        """Tell the VTN the householder changed their mind about `event` (EiOpt + EiEvent)."""
        if event.source != SOURCE:
            return
        ven_id = self.client.ven_id
        targets = [{"ven_id": ven_id}]
        try:
            await self.client.create_opt(
                opt_type=opt_type,
                opt_reason=enums.OPT_REASON.PARTICIPATING if opt_type == "optIn" else enums.OPT_REASON.OVERRIDE_STATUS,
                targets=targets,
                event_id=event.event_id,
                modification_number=event.modification,
            )
        except Exception as err:  # openleadr raises broadly; the EiEvent path below still reports
            _LOGGER.debug("oadrCreateOpt not delivered: %r", err)
        await self.client.created_event(
            request_id=utils.generate_id(),
            event_id=event.event_id,
            opt_type=opt_type,
            modification_number=event.modification,
        )
        self.client.responded_events[event.event_id] = opt_type
        self.opts_sent.append((event.event_id, opt_type))
        _LOGGER.info("OpenADR: reported %s for event %s", opt_type, event.event_id)

    async def run(self) -> None:
        """Register (retrying) and leave polling to openleadr's scheduler until stopped."""
        backoff = Backoff(initial=2.0, maximum=300.0)
        while not self._stopped:
            await self.client.run()
            if self.client.registration_id:
                _LOGGER.info("OpenADR VEN registered with %s as %s", self.client.vtn_url, self.client.ven_id)
                await asyncio.Event().wait()
            delay = backoff.next_delay()
            _LOGGER.warning("OpenADR registration with %s failed; retrying in %.0f s", self.client.vtn_url, delay)
            self.client.client_session = None
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        """Stop polling and close the HTTP session."""
        self._stopped = True
        if self.client.scheduler.running:
            self.client.scheduler.shutdown(wait=False)
        if self.client.report_queue_task:
            self.client.report_queue_task.cancel()
        if self.client.client_session is not None:
            await self.client.client_session.close()
