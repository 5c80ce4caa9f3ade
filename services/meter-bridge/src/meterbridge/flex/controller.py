"""The flex controller: what flex knows (the situation), the policy tick, and applying its actions.

- `handle` keeps the latest site import and asset power (never touches the network).
- One task ticks every `tick_s` (at once after a command): `policy.decide`, apply the
  actions through the assets' actuators, re-arm device fail-safes, persist, tell the
  state outlet (the MQTT I/O) that the state document may have changed.
- Events come from `submit_event` (OpenADR VEN, community and manual MQTT events), settings
  from `handle_command` (Home Assistant).

The parts around it are wired in `meterbridge.app.build_flex`: the store (`store.py`), the
actuators and the Shelly RPC session (`relays.py`), the MQTT I/O (`mqttio.py`), the VEN
(`openadr.py`, through its `VenController` protocol) and the HA entities (`entities.py`,
announced by the HA sink). They are `FlexPart`s the controller starts and closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from ..asyncutil import stop_tasks, wait_event
from ..errors import ParseError, SinkError
from ..logutil import RateLimitedLog
from ..model import Event, Quantity, Reading, utc_now
from ..sinks import Sink
from .actuators import Actuator, HomeAssistantActuator
from .assets import AssetConfig, in_windows
from .baseline import PeriodRecord
from .config import FlexConfig
from .entities import MODES, OFF, ON, FlexTopics
from .events import FlexEvent, parse_event_message, target_for_level
from .ledger import LedgerFile, PeriodAccumulator
from .policy import Action, AssetState, AssetView, Cause, Direction, EventView, Situation, decide, fail_safe_s
from .report import energy_rules, settle_from_files
from .settlement import EventDelivery, delivery_points, delivery_summary
from .store import AssetRecord, EventRecord, FlexSettings, FlexStore, write_atomically

_LOGGER = logging.getLogger(__name__)

#: Decisions kept for Home Assistant's "Last decision" attributes.
RECENT_DECISIONS = 10
#: Finished events are forgotten after this long.
KEEP_FINISHED_S = 3600.0
#: Settled events kept for Home Assistant's per-event history.
RECENT_DELIVERIES = 10
#: After a failed settlement, the next try waits this long.
SETTLE_RETRY_S = 300.0
#: Closed ledger periods wait this long so all meters' periods go in one write (SD card budget).
LEDGER_BATCH_S = 60.0

OptListener = Callable[[FlexEvent, str], Awaitable[None]]
DeliveryListener = Callable[[EventDelivery, str], Awaitable[None]]


@dataclass(slots=True, kw_only=True)
class AssetRuntime(AssetRecord):
    """One asset's live state: the persisted part, what the policy sees and command bookkeeping."""

    config: AssetConfig
    actuator: Actuator
    power_w: float | None = None
    #: Monotonic time the device fail-safe was last armed (None: arm on the next tick).
    armed_at: float | None = None


class FlexPart(Protocol):
    """Something that runs beside the controller (MQTT I/O, Shelly RPC session, VEN)."""

    async def start(self) -> None:
        """Start background work; must not block on the network."""

    async def close(self) -> None:
        """Stop."""


class StateOutlet(Protocol):
    """Where the state document goes (`FlexMqtt`)."""

    def state_changed(self, changed: bool) -> None:
        """The state may read differently now; `changed`: it certainly does."""


class _NoOutlet:
    def state_changed(self, changed: bool) -> None:
        pass


@dataclass
class _Flags:
    state_dirty: bool = True
    persist_dirty: bool = False
    closing: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class FlexController(Sink):
    """Demand response as a bridge component (see the module docstring)."""

    name = "flex"

    def __init__(
        self,
        flex: FlexConfig,
        topics: FlexTopics,
        actuators: Mapping[str, Actuator],
        *,
        store: FlexStore | None = None,
        clock: Callable[[], datetime] = utc_now,
        site_id: str = "home",
    ) -> None:
        super().__init__()
        self.site_id = site_id
        self._flex = flex
        self._clock = clock
        self.topics = topics
        self.store = store or FlexStore(flex.state_path, flex.log_path)
        self.settings = FlexSettings(import_limit_w=flex.import_limit_w)
        self.events: dict[str, EventRecord] = {}
        self.last_restore: datetime | None = None
        self.site_import_w: float | None = None
        self.assets = {asset.id: AssetRuntime(config=asset, actuator=actuators[asset.id]) for asset in flex.assets}
        self._meter_assets: dict[str, list[str]] = {}
        for asset in flex.assets:
            if asset.meter_id:
                self._meter_assets.setdefault(asset.meter_id, []).append(asset.id)
        # the half-hour ledger of the site's and the metered assets' energy (settlement, issue 27)
        ledger_meters = {*self._meter_assets, *([flex.site_meter_id] if flex.site_meter_id else [])}
        self.ledger = LedgerFile(flex.ledger_path, flex.settlement.keep_days)
        self.accumulator = PeriodAccumulator(frozenset(ledger_meters), energy_rules(flex.settlement))
        self._ledger_pending: list[PeriodRecord] = []
        self._ledger_since: float | None = None
        # settled events (issue 27): what HA shows, who else hears of them, what is still to settle
        self.deliveries_path = flex.state_path.with_name("flex-deliveries.json")
        self.recent_deliveries: list[dict[str, Any]] = []
        self.delivery_listeners: list[DeliveryListener] = []
        #: Where points for InfluxDB go (the hub's `publish`, set by the bridge; None: nowhere).
        self.publish: Callable[[Event], None] | None = None
        self._to_settle: dict[str, datetime] = {}
        self._settle_retry_at: datetime | None = None
        self._load_deliveries()
        self.decisions: deque[dict[str, Any]] = deque(maxlen=RECENT_DECISIONS)
        self.opt_listeners: list[OptListener] = []
        #: Started with the controller, closed in this order after it.
        self.parts: list[FlexPart] = []
        self.outlet: StateOutlet = _NoOutlet()
        self._log = RateLimitedLog(_LOGGER)
        self._flags = _Flags()
        self._tasks: list[asyncio.Task[None]] = []
        self.stats.connected = False
        for key in ("events_rejected", "events_accepted", "switches", "command_failures", "ledger_late_readings"):
            self.stats.gauges[key] = 0
        self._load_state()

    # -- persistence and the decision log -----------------------------------------------

    def _load_state(self) -> None:
        path = self.store.state_path
        try:
            saved = self.store.load()
        except OSError as err:
            _LOGGER.error("Flex state %s unreadable (%s): starting fresh", path, err)
            return
        except ValueError as err:
            _LOGGER.error("Flex state %s damaged (%s): starting fresh", path, err)
            return
        if saved is None:
            return
        self.settings, self.events, self.last_restore = saved.settings, saved.events, saved.last_restore
        for asset_id, record in saved.assets.items():
            if asset_id in self.assets:
                self.assets[asset_id].restore(record)
        shed = [a.config.id for a in self.assets.values() if a.state is not AssetState.NORMAL]
        _LOGGER.info("Flex state resumed from %s: %d events, assets away from normal: %s", path, len(self.events), shed)
        self._record("resumed", assets_not_normal=shed, events=list(self.events))

    def _save_state(self) -> None:
        try:
            self.store.save(self.settings, self.events, self.last_restore, self.assets)
            self._flags.persist_dirty = False
        except OSError as err:
            self.stats.errors["persist"] += 1
            self._log.log(logging.ERROR, "persist", "Cannot write flex state %s: %s", self.store.state_path, err)

    def _record(self, kind: str, **details: Any) -> None:
        """Append one decision to the log (JSON lines) and to what HA shows."""
        entry = {"ts": self._clock().isoformat(), "kind": kind, **details}
        self.decisions.append(entry)
        self._flags.state_dirty = True
        try:
            self.store.append(entry)
        except OSError as err:
            self.stats.errors["event_log"] += 1
            self._log.log(logging.ERROR, "event_log", "Cannot append to %s: %s", self.store.log_path, err)

    def _load_deliveries(self) -> None:
        try:
            data = json.loads(self.deliveries_path.read_text(encoding="utf-8"))
            self.recent_deliveries = [dict(d) for d in data["recent"]][:RECENT_DELIVERIES]
            self._to_settle = {str(k): datetime.fromisoformat(v) for k, v in data["to_settle"].items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            _LOGGER.error("Flex deliveries %s unreadable (%r): starting without", self.deliveries_path, err)

    def _save_deliveries(self) -> None:
        data = {"recent": self.recent_deliveries, "to_settle": {k: v.isoformat() for k, v in self._to_settle.items()}}
        try:
            write_atomically(self.deliveries_path, json.dumps(data, indent=1))
        except OSError as err:
            self.stats.errors["persist"] += 1
            self._log.log(logging.ERROR, "deliveries", "Cannot write %s: %s", self.deliveries_path, err)

    async def settle_due(self, now: datetime) -> list[EventDelivery]:
        """Settle the events whose last period is in the ledger; tell HA, InfluxDB and the listeners.

        An event is due one period, the ledger's batch time and a minute after its end (the
        period after the event closes its last period's end boundary).
        """
        wait = self._flex.settlement.period + timedelta(seconds=LEDGER_BATCH_S + 60)
        due = sorted(event_id for event_id, end in self._to_settle.items() if end + wait <= now)
        if not due or (self._settle_retry_at is not None and now < self._settle_retry_at):
            return []
        self.write_ledger()
        try:
            report = await asyncio.to_thread(settle_from_files, self._flex, None, None, due)
        except Exception as err:  # an unreadable file or a bug: try again in a while, not every tick
            self.stats.errors["settlement"] += 1
            self._settle_retry_at = now + timedelta(seconds=SETTLE_RETRY_S)
            self._log.log(logging.ERROR, "settlement", "Cannot settle %s: %r", ", ".join(due), err)
            return []
        self._settle_retry_at = None
        for problem in report.problems:
            self._log.log(logging.WARNING, "settlement_input", "Settlement skipped %s", problem)
        method = self._flex.settlement.report_method
        for delivery in report.deliveries:
            summary = delivery_summary(delivery, method)
            self.recent_deliveries = [summary, *self.recent_deliveries][:RECENT_DELIVERIES]
            self._record("settled", **summary)
            if self.publish is not None:
                for point in delivery_points(delivery, self.site_id):
                    self.publish(point)
        settled = {d.event.event_id for d in report.deliveries}
        for event_id in due:
            if event_id not in settled:
                _LOGGER.warning("Event %s is not in the decision log %s: not settled", event_id, self._flex.log_path)
            del self._to_settle[event_id]
        self._save_deliveries()
        self._changed()
        for delivery in report.deliveries:
            for listener in self.delivery_listeners:
                try:
                    await listener(delivery, method)
                except Exception as err:
                    self.stats.errors["delivery_listener"] += 1
                    _LOGGER.error("Reporting the delivery of %s failed: %r", delivery.event.event_id, err)
        return list(report.deliveries)

    # -- events ---------------------------------------------------------------------------

    @property
    def flexible_w(self) -> float:
        """Rated power of the assets flex may control now (W)."""
        return sum(a.config.rated_power_w for a in self.assets.values() if a.allowed)

    def _availability_reason(self, event: FlexEvent) -> str | None:
        """Why flex cannot take part in `event` (None: it can)."""
        if self.settings.mode == "off":
            return "mode off"
        if self.settings.mode == "manual" and event.source != "manual":
            return "mode manual: only manual events"
        if not self.settings.participation:
            return "participation off"
        local = event.start.astimezone().time()
        usable = [
            a
            for a in self.assets.values()
            if a.allowed
            and in_windows(a.config.windows, local)
            and (a.config.normal_on if event.direction is Direction.DOWN else a.config.can_boost)
        ]
        if not usable:
            return "no asset available"
        return None

    def submit_event(self, event: FlexEvent) -> bool:
        """Take an event from any source; True when flex takes part (optIn), False for optOut."""
        existing = self.events.get(event.event_id)
        if existing is not None and event.modification < existing.event.modification:
            return existing.accepted and not existing.opted_out  # stale copy
        if event.cancelled:
            if existing is not None:
                existing.event = existing.event.cancel()
                self._record("event_cancelled", event_id=event.event_id, source=event.source)
                if self._to_settle.pop(event.event_id, None) is not None:
                    self._save_deliveries()
                self._changed()
            return False
        if existing is not None and existing.opted_out:
            existing.event = event
            self._changed()
            return False
        reason = self._availability_reason(event)
        accepted = reason is None
        record = EventRecord(event, accepted, reason=reason or "")
        self._to_settle[event.event_id] = event.end
        self._save_deliveries()
        if existing is not None:
            record.baseline_w = existing.baseline_w
        self.events[event.event_id] = record
        self.stats.gauges["events_accepted" if accepted else "events_rejected"] += 1
        self._record(
            "opt_in" if accepted else "opt_out",
            event_id=event.event_id,
            source=event.source,
            modified=existing is not None,
            reason=reason,
            event=event.to_json(),
            # what settlement compares the delivery with (a level asks for a share of what flex controls now)
            requested_w=event.target_w
            if event.target_w is not None
            else target_for_level(event.level or 1, self.flexible_w),
        )
        self._changed()
        return accepted

    def running_event(self, now: datetime | None = None) -> EventRecord | None:
        """The accepted event running at `now` (the latest starting one if several overlap)."""
        now = now or self._clock()
        running = [
            r
            for r in self.events.values()
            if r.accepted and not r.event.cancelled and r.event.start <= now < r.event.end
        ]
        return max(running, key=lambda r: r.event.start) if running else None

    def current_event(self, now: datetime | None = None) -> EventRecord | None:
        """The event to show: running, else the next upcoming, else the latest seen."""
        now = now or self._clock()
        running = self.running_event(now)
        if running is not None:
            return running
        upcoming = [r for r in self.events.values() if r.event.start > now and not r.event.cancelled]
        if upcoming:
            return min(upcoming, key=lambda r: r.event.start)
        if self.events:
            return max(self.events.values(), key=lambda r: r.event.end)
        return None

    async def opt_out(self) -> FlexEvent | None:
        """The householder opts out of the running (or next) event: assets come back at once."""
        record = self.running_event() or self.current_event()
        if record is None or not record.accepted or record.opted_out or record.event.cancelled:
            return None
        record.opted_out = True
        self._record("opt_out", event_id=record.event.event_id, reason="householder opted out")
        self._changed()
        for listener in self.opt_listeners:
            try:
                await listener(record.event, "optOut")
            except Exception as err:
                self.stats.errors["opt_listener"] += 1
                _LOGGER.error("Reporting the opt-out of %s failed: %r", record.event.event_id, err)
        return record.event

    def _changed(self) -> None:
        self._flags.persist_dirty = True
        self._flags.state_dirty = True
        self._flags.wake.set()

    # -- the sink side ---------------------------------------------------------------------

    async def handle(self, events: Sequence[Event]) -> None:
        """Keep the latest site import and asset power (W), and feed the ledger; never blocks."""
        for event in events:
            if not isinstance(event, Reading):
                continue
            closed = self.accumulator.feed(event)
            self.stats.gauges["ledger_late_readings"] = self.accumulator.late_readings
            if closed:
                self._ledger_pending += closed
                if self._ledger_since is None:
                    self._ledger_since = time.monotonic()
            if event.quantity is not Quantity.POWER:
                continue
            if event.meter_id == self._flex.site_meter_id:
                self.site_import_w = event.value
            for asset_id in self._meter_assets.get(event.meter_id, ()):
                self.assets[asset_id].power_w = event.value

    def write_ledger(self, final: bool = False) -> None:
        """Append the closed ledger periods (and with `final`, the open ones) in one write."""
        if final:
            self._ledger_pending += self.accumulator.flush()
        if not self._ledger_pending:
            return
        try:
            self.ledger.append(self._ledger_pending)
        except OSError as err:
            self.stats.errors["ledger"] += 1
            self._log.log(logging.ERROR, "ledger", "Cannot append to the ledger %s: %s", self.ledger.path, err)
            if len(self._ledger_pending) < 10_000:
                return  # kept for the next try
        self._ledger_pending = []
        self._ledger_since = None

    # -- the policy tick -----------------------------------------------------------------

    def situation(self, now: datetime) -> Situation:
        """What the policy sees at `now`."""
        record = self.running_event(now) or self.current_event(now)
        view = None
        if record is not None and record.accepted and not record.event.cancelled:
            event = record.event
            target = (
                event.target_w if event.target_w is not None else target_for_level(event.level or 1, self.flexible_w)
            )
            view = EventView(
                event.event_id, event.direction, target, event.start, event.end, record.baseline_w, record.opted_out
            )
        local = now.astimezone().time()
        assets = tuple(
            AssetView(
                asset_id=a.config.id,
                priority=a.config.priority,
                rated_power_w=a.config.rated_power_w,
                power_w=a.power_w,
                normal_on=a.config.normal_on,
                can_boost=a.config.can_boost,
                allowed=a.allowed,
                in_window=in_windows(a.config.windows, local),
                state=a.state,
                cause=a.cause,
                changed_at=a.changed_at,
                shed_since=a.shed_since,
                used_in_event=view is not None and a.used_in_event == view.event_id,
                min_on_s=a.config.min_on_s,
                min_off_s=a.config.min_off_s,
                max_shed_s=a.config.max_shed_s,
            )
            for a in self.assets.values()
        )
        return Situation(
            now=now,
            active=self.settings.mode != "off",
            event=view,
            assets=assets,
            site_import_w=self.site_import_w,
            import_limit_w=self.settings.import_limit_w,
            last_restore=self.last_restore,
            stagger_s=self._flex.stagger_s,
            settle_s=self._flex.settle_s,
        )

    async def _apply(self, action: Action, now: datetime, situation: Situation) -> None:
        asset = self.assets[action.asset_id]
        view = next(v for v in situation.assets if v.asset_id == action.asset_id)
        # A new period away from normal starts now: the full fail-safe, cut to max_shed_s.
        normal = action.state is AssetState.NORMAL
        fail_safe = None if normal else min(self._flex.failsafe_s, asset.config.max_shed_s)
        try:
            await asset.actuator.set(action.on, fail_safe)
        except SinkError as err:
            self.stats.gauges["command_failures"] += 1
            self._log.log(logging.ERROR, f"cmd:{asset.config.id}", "Switching %s failed: %s", asset.config.id, err)
            return
        previous = asset.state
        asset.state = action.state
        asset.cause = action.cause
        asset.changed_at = now if action.on != view.is_on else asset.changed_at
        if action.state is AssetState.NORMAL:
            asset.shed_since = None
            asset.armed_at = None
            if previous is not AssetState.NORMAL and action.reason in ("event over", "import back under limit"):
                self.last_restore = now
        else:
            asset.shed_since = now
            asset.armed_at = time.monotonic()
            if action.cause is Cause.EVENT and situation.event is not None:
                asset.used_in_event = situation.event.event_id
        self.stats.gauges["switches"] += 1
        _LOGGER.info("Flex: %s -> %s (%s)", asset.config.id, action.state.value, action.reason)
        self._record(
            "switch",
            asset_id=asset.config.id,
            state=action.state.value,
            on=action.on,
            reason=action.reason,
            fail_safe_s=fail_safe if asset.actuator.has_fail_safe else None,
        )
        self._changed()

    async def _rearm(self, now: datetime, situation: Situation) -> None:
        """Re-arm device fail-safes of assets away from normal (and re-send after a restart)."""
        monotonic = time.monotonic()
        for view in situation.assets:
            asset = self.assets[view.asset_id]
            if asset.state is AssetState.NORMAL:
                continue
            due = asset.armed_at is None or monotonic - asset.armed_at >= self._flex.failsafe_s / 3
            if not due:
                continue
            fail_safe = fail_safe_s(situation, view, self._flex.failsafe_s)
            try:
                await asset.actuator.set(view.is_on, fail_safe)
                asset.armed_at = monotonic
            except SinkError as err:
                self.stats.gauges["command_failures"] += 1
                self._log.log(logging.ERROR, f"arm:{asset.config.id}", "Re-arming %s failed: %s", asset.config.id, err)

    async def tick(self) -> list[Action]:
        """One policy round: decide, apply, re-arm; returns the actions taken."""
        now = self._clock()
        running = self.running_event(now)
        if running is not None and running.baseline_w is None and self.site_import_w is not None:
            running.baseline_w = self.site_import_w
            self._record("baseline", event_id=running.event.event_id, baseline_w=running.baseline_w)
            self._changed()
        for key, record in list(self.events.items()):
            if (now - record.event.end).total_seconds() > KEEP_FINISHED_S:
                del self.events[key]
                self._changed()
        situation = self.situation(now)
        actions = decide(situation)
        for action in actions:
            await self._apply(action, now, situation)
        await self._rearm(now, self.situation(now))
        if self._flags.persist_dirty:
            self._save_state()
        if self._ledger_since is not None and time.monotonic() - self._ledger_since >= LEDGER_BATCH_S:
            self.write_ledger()
        if self._to_settle:
            await self.settle_due(now)
        return actions

    async def _tick_loop(self) -> None:
        while not self._flags.closing:
            self._flags.wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a bug in one round must not stop the next (fail-safes still hold)
                self.stats.errors["tick"] += 1
                self._log.log(logging.ERROR, "tick", "Flex tick failed: %r", err)
            changed, self._flags.state_dirty = self._flags.state_dirty, False
            self.outlet.state_changed(changed)
            await wait_event(self._flags.wake, self._flex.tick_s)

    # -- Home Assistant state and commands ----------------------------------------------

    def state_document(self) -> dict[str, Any]:
        """The retained JSON state every HEMS Flex entity reads."""
        now = self._clock()
        record = self.current_event(now)
        running = self.running_event(now)
        status = "none"
        requested = achieved = 0.0
        start = end = None
        if record is not None:
            event = record.event
            start, end = event.start.isoformat(), event.end.isoformat()
            if event.cancelled:
                status = "cancelled"
            elif not record.accepted:
                status = "rejected"
            elif record.opted_out:
                status = "opted_out"
            elif now < event.start:
                status = "pending"
            elif now < event.end:
                status = "active"
            else:
                status = "completed"
            situation = self.situation(now)
            if situation.event is not None and record is running and not record.opted_out:
                requested = situation.event.target_w
                if record.baseline_w is not None and self.site_import_w is not None:
                    change = self.site_import_w - record.baseline_w
                    achieved = max(0.0, -change if event.direction is Direction.DOWN else change)
        last = self.decisions[-1] if self.decisions else None
        latest = self.recent_deliveries[0] if self.recent_deliveries else None
        return {
            "participation": ON if self.settings.participation else OFF,
            "mode": self.settings.mode,
            "import_limit_w": self.settings.import_limit_w or 0,
            "event_active": ON if running is not None and not running.opted_out else OFF,
            "event_id": None if record is None else record.event.event_id,
            "event_status": status,
            "event_start": start,
            "event_end": end,
            "requested_w": round(requested),
            "achieved_w": round(achieved),
            "last_decision": _summary(last),
            "delivered_kwh": None if latest is None else latest["delivered_kwh"],
            "delivered_share": None if latest is None else latest["share_pct"],
            "delivered_event": None if latest is None else latest["event_id"],
            "deliveries": self.recent_deliveries,
            "decisions": list(self.decisions),
            "assets": {
                asset_id: {"allowed": ON if a.allowed else OFF, "state": a.state.value, "power_w": a.power_w}
                for asset_id, a in self.assets.items()
            },
        }

    def state_body(self) -> bytes:
        """The state document as published (JSON)."""
        return json.dumps(self.state_document(), default=str).encode()

    async def handle_command(self, topic: str, payload: bytes) -> None:
        """Apply one command from Home Assistant (takes effect on the next tick, woken at once)."""
        text = payload.decode(errors="replace").strip()
        if topic == self.topics.command("participation") and text in (ON, OFF):
            self.settings.participation = text == ON
            self._record("setting", participation=self.settings.participation)
        elif topic == self.topics.command("mode") and text in MODES:
            self.settings.mode = text
            self._record("setting", mode=text)
        elif topic == self.topics.command("import_limit"):
            try:
                value = float(text)
            except ValueError:
                self._log.log(logging.WARNING, "cmd", "Flex: import limit %r is not a number", text)
                return
            self.settings.import_limit_w = value if value > 0 else None
            self._record("setting", import_limit_w=self.settings.import_limit_w)
        elif topic == self.topics.command("opt_out"):
            await self.opt_out()
        else:
            for asset_id, asset in self.assets.items():
                if topic == self.topics.allow(asset_id) and text in (ON, OFF):
                    asset.allowed = text == ON
                    self._record("setting", asset_id=asset_id, allowed=asset.allowed)
                    break
            else:
                self._log.log(logging.WARNING, "cmd", "Flex: ignored command %r on %s", text, topic)
                return
        self._changed()

    def handle_event_message(self, topic: str, payload: bytes) -> FlexEvent | None:
        """Validate and submit an MQTT event; invalid ones are logged, counted and change nothing."""
        source = "manual" if topic == self.topics.manual else "mqtt"
        try:
            event = parse_event_message(payload, source)
        except ParseError as err:
            self.stats.errors["invalid_event"] += 1
            self.stats.gauges["events_rejected"] += 1
            self._log.log(logging.WARNING, "invalid_event", "Flex: rejected invalid event on %s: %s", topic, err)
            return None
        self.submit_event(event)
        return event

    # -- running ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the parts (MQTT I/O, Shelly RPC, VEN) and the tick task."""
        try:
            dropped = self.ledger.compact(self._clock())
            if dropped:
                _LOGGER.info("Ledger %s: dropped %d lines older than the kept days", self.ledger.path, dropped)
        except OSError as err:
            self.stats.errors["ledger"] += 1
            _LOGGER.error("Cannot compact the ledger %s: %s", self.ledger.path, err)
        for part in self.parts:
            await part.start()
        self._tasks = [asyncio.create_task(self._tick_loop(), name="flex-tick")]

    async def close(self) -> None:
        """Persist and stop. Assets stay as they are: their fail-safes bring them back if we stay away."""
        self._flags.closing = True
        if self._flags.persist_dirty:
            self._save_state()
        self.write_ledger(final=True)
        self._flags.wake.set()
        await stop_tasks(self._tasks)
        for part in self.parts:
            await part.close()
        for asset in self.assets.values():
            if isinstance(asset.actuator, HomeAssistantActuator):
                await asset.actuator.close()


def _summary(entry: dict[str, Any] | None) -> str:
    """A one-line text of a decision for the HA sensor (state strings max 255 chars)."""
    if entry is None:
        return "none"
    details = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("ts", "kind", "event"))
    return f"{entry['kind']}: {details}"[:250]
