"""The flex controller: a sink (it needs the readings) that runs the policy and switches assets.

- `handle` keeps the latest site import and asset power (never touches the network).
- One task owns an MQTT connection: HA discovery and state of the "HEMS Flex" device,
  HA's commands, community and manual events, MQTT actuators' state.
- One task ticks every `tick_s` (at once after a command): `policy.decide`, apply the
  actions, re-arm device fail-safes, persist, publish.
- State (events, asset states, HA settings) is persisted as JSON, written atomically,
  so a restart mid-event resumes; every decision is appended to a JSON-lines log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt

from ..asyncutil import wait_event
from ..errors import BridgeError, ParseError, SinkError
from ..ha_topics import Topics
from ..logutil import RateLimitedLog
from ..model import Event, Quantity, Reading, utc_now
from ..mqtt import endpoint
from ..mqttsession import MqttSession
from ..sections import MqttContext
from ..sinks import Sink
from ..sources.shelly.relay import ShellyMqttRpc, ShellyRelay, rpc_on
from .actuators import Actuator, HomeAssistantActuator, MqttActuator, RelayLike, ShellyActuator
from .assets import AssetConfig, HomeAssistantActuatorConfig, MqttActuatorConfig, ShellyActuatorConfig, in_windows
from .config import FlexConfig
from .entities import MODES, OFF, ON, FlexTopics, discovery_messages
from .events import FlexEvent, parse_event_message, target_for_level
from .policy import Action, AssetState, AssetView, Cause, Direction, EventView, Situation, decide, fail_safe_s

_LOGGER = logging.getLogger(__name__)

#: Persisted-state format; bump on incompatible changes.
STATE_VERSION = 1
#: Decisions kept for Home Assistant's "Last decision" attributes.
RECENT_DECISIONS = 10
#: Finished events are forgotten after this long.
KEEP_FINISHED_S = 3600.0

OptListener = Callable[[FlexEvent, str], Awaitable[None]]


@dataclass(slots=True)
class AssetRuntime:
    """One asset's live state (what the policy sees plus command bookkeeping)."""

    config: AssetConfig
    actuator: Actuator
    allowed: bool = True
    state: AssetState = AssetState.NORMAL
    cause: Cause | None = None
    changed_at: datetime | None = None
    shed_since: datetime | None = None
    used_in_event: str | None = None
    power_w: float | None = None
    #: Monotonic time the device fail-safe was last armed (None: arm on the next tick).
    armed_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Persisted part."""
        return {
            "allowed": self.allowed,
            "state": self.state.value,
            "cause": None if self.cause is None else self.cause.value,
            "changed_at": None if self.changed_at is None else self.changed_at.isoformat(),
            "shed_since": None if self.shed_since is None else self.shed_since.isoformat(),
            "used_in_event": self.used_in_event,
        }

    def load(self, data: dict[str, Any]) -> None:
        """Restore the persisted part; raises `KeyError`/`ValueError` on damaged data."""
        self.allowed = bool(data["allowed"])
        self.state = AssetState(data["state"])
        self.cause = None if data["cause"] is None else Cause(data["cause"])
        self.changed_at = None if data["changed_at"] is None else datetime.fromisoformat(data["changed_at"])
        self.shed_since = None if data["shed_since"] is None else datetime.fromisoformat(data["shed_since"])
        self.used_in_event = data["used_in_event"]


@dataclass(slots=True)
class EventRecord:
    """An event flex knows of, and what it made of it."""

    event: FlexEvent
    accepted: bool
    baseline_w: float | None = None
    opted_out: bool = False
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """Persisted form."""
        return {
            "event": self.event.to_json(),
            "accepted": self.accepted,
            "baseline_w": self.baseline_w,
            "opted_out": self.opted_out,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EventRecord:
        """Inverse of `to_json`."""
        return cls(
            FlexEvent.from_json(data["event"]),
            bool(data["accepted"]),
            data["baseline_w"],
            bool(data["opted_out"]),
            str(data["reason"]),
        )


@dataclass(slots=True)
class FlexSettings:
    """What the householder sets in Home Assistant (persisted)."""

    participation: bool = True
    mode: str = "auto"
    import_limit_w: float | None = None


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` so a crash leaves the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    tmp.replace(path)


class _ShellyRelays:
    """Shelly relays over one MQTT RPC session, reopened when it drops.

    The relay API lives in `meterbridge.sources.shelly.relay` (the Shelly source's
    module); it is imported when the first Shelly asset is switched.
    """

    def __init__(self, config: MqttContext) -> None:
        self._config = config
        self._rpc: ShellyMqttRpc | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="flex-shelly-rpc")

    async def _run(self) -> None:
        client_id = f"{self._config.client_id}-flex-rpc"
        session = MqttSession(self._config.mqtt, client_id, name="Flex Shelly RPC")

        async def body(client: aiomqtt.Client) -> None:
            async with rpc_on(client, client_id) as rpc:
                self._rpc = rpc
                self._ready.set()
                if rpc.replies is not None:
                    await rpc.replies  # raises MqttError when the connection is lost: reconnect

        def down(error: BridgeError) -> None:
            self._ready.clear()
            self._rpc = None

        await session.run(body, on_down=down)

    def relay(self, prefix: str, channel: int) -> RelayLike:
        """A relay bound to whatever session is current when it is called."""
        owner = self

        class _Relay:
            async def _get(self) -> ShellyRelay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(owner._ready.wait(), 5)
                if owner._rpc is None:
                    raise SinkError("Shelly RPC session not connected")
                return ShellyRelay(owner._rpc, prefix, channel)

            async def set(self, on: bool, toggle_after_s: float | None = None, timeout_s: float | None = None) -> bool:
                relay = await self._get()
                return bool(await relay.set(on, toggle_after_s=toggle_after_s, timeout_s=timeout_s))

            async def is_on(self, timeout_s: float | None = None) -> bool:
                relay = await self._get()
                return bool(await relay.is_on(timeout_s=timeout_s))

        return _Relay()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class FlexController(Sink):
    """Demand response as a bridge component (see the module docstring)."""

    name = "flex"

    def __init__(self, config: MqttContext, flex: FlexConfig, clock: Callable[[], datetime] = utc_now) -> None:
        super().__init__()
        self._config = config
        self._flex = flex
        self._clock = clock
        base = config.mqtt.base_topic
        self._topics = Topics(base, config.homeassistant.discovery_prefix)
        self.topics = FlexTopics(base)
        self._event_topic = self._flex.event_topic or f"{base}/flex/event"
        self._manual_topic = self._flex.manual_topic or f"{base}/flex/manual_event"
        self.settings = FlexSettings(import_limit_w=self._flex.import_limit_w)
        self.events: dict[str, EventRecord] = {}
        self.last_restore: datetime | None = None
        self.site_import_w: float | None = None
        self._client: aiomqtt.Client | None = None
        self._shelly = _ShellyRelays(config)
        self.assets: dict[str, AssetRuntime] = {}
        self._mqtt_actuators: dict[str, MqttActuator] = {}
        for asset in self._flex.assets:
            self.assets[asset.id] = AssetRuntime(asset, self._make_actuator(asset))
        self._meter_assets: dict[str, list[str]] = {}
        for asset in self._flex.assets:
            if asset.meter_id:
                self._meter_assets.setdefault(asset.meter_id, []).append(asset.id)
        self.decisions: deque[dict[str, Any]] = deque(maxlen=RECENT_DECISIONS)
        self.opt_listeners: list[OptListener] = []
        self._log = RateLimitedLog(_LOGGER)
        self._wake = asyncio.Event()
        self._state_dirty = True
        self._persist_dirty = False
        self._rediscover = True
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._publish_wake = asyncio.Event()
        self._published: bytes | None = None
        self.ven: Any = None
        self.stats.connected = False
        for key in ("events_rejected", "events_accepted", "switches", "command_failures"):
            self.stats.gauges[key] = 0
        self._load_state()

    # -- construction ---------------------------------------------------------------------

    def _make_actuator(self, asset: AssetConfig) -> Actuator:
        actuator_config = asset.actuator
        if isinstance(actuator_config, ShellyActuatorConfig):
            return ShellyActuator(self._shelly.relay(actuator_config.prefix, actuator_config.channel))
        if isinstance(actuator_config, HomeAssistantActuatorConfig):
            return HomeAssistantActuator(actuator_config)
        if isinstance(actuator_config, MqttActuatorConfig):
            mqtt_actuator = MqttActuator(actuator_config, self._publish)
            self._mqtt_actuators[asset.id] = mqtt_actuator
            return mqtt_actuator
        raise TypeError(type(actuator_config).__name__)  # pragma: no cover - the union is closed

    async def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        client = self._client
        if client is None:
            raise SinkError(f"MQTT broker {endpoint(self._config.mqtt)} not connected")
        try:
            await client.publish(topic, payload, qos=1, retain=retain)
        except aiomqtt.MqttError as err:
            raise SinkError(f"publish to {topic} failed: {err}") from err

    # -- persistence and the decision log -----------------------------------------------

    def _load_state(self) -> None:
        path = self._flex.state_path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            _LOGGER.error("Flex state %s unreadable (%s): starting fresh", path, err)
            return
        try:
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            settings = data["settings"]
            self.settings = FlexSettings(
                bool(settings["participation"]), str(settings["mode"]), settings["import_limit_w"]
            )
            self.events = {key: EventRecord.from_json(value) for key, value in data["events"].items()}
            self.last_restore = None if data["last_restore"] is None else datetime.fromisoformat(data["last_restore"])
            for asset_id, asset_data in data["assets"].items():
                if asset_id in self.assets:
                    self.assets[asset_id].load(asset_data)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            _LOGGER.error("Flex state %s damaged (%r): starting fresh", path, err)
            return
        shed = [a.config.id for a in self.assets.values() if a.state is not AssetState.NORMAL]
        _LOGGER.info("Flex state resumed from %s: %d events, assets away from normal: %s", path, len(self.events), shed)
        self._record("resumed", assets_not_normal=shed, events=list(self.events))

    def _save_state(self) -> None:
        data = {
            "version": STATE_VERSION,
            "settings": {
                "participation": self.settings.participation,
                "mode": self.settings.mode,
                "import_limit_w": self.settings.import_limit_w,
            },
            "events": {key: record.to_json() for key, record in self.events.items()},
            "last_restore": None if self.last_restore is None else self.last_restore.isoformat(),
            "assets": {asset_id: asset.to_json() for asset_id, asset in self.assets.items()},
        }
        try:
            write_atomically(self._flex.state_path, json.dumps(data, indent=1))
            self._persist_dirty = False
        except OSError as err:
            self.stats.errors["persist"] += 1
            self._log.log(logging.ERROR, "persist", "Cannot write flex state %s: %s", self._flex.state_path, err)

    def _record(self, kind: str, **details: Any) -> None:
        """Append one decision to the log (JSON lines) and to what HA shows."""
        entry = {"ts": self._clock().isoformat(), "kind": kind, **details}
        self.decisions.append(entry)
        self._state_dirty = True
        try:
            self._flex.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self._flex.log_path.open("a", encoding="utf-8") as file:
                file.write(json.dumps(entry, default=str) + "\n")
        except OSError as err:
            self.stats.errors["event_log"] += 1
            self._log.log(logging.ERROR, "event_log", "Cannot append to %s: %s", self._flex.log_path, err)

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
                self._changed()
            return False
        if existing is not None and existing.opted_out:
            existing.event = event
            self._changed()
            return False
        reason = self._availability_reason(event)
        accepted = reason is None
        record = EventRecord(event, accepted, reason=reason or "")
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
        self._persist_dirty = True
        self._state_dirty = True
        self._wake.set()

    # -- the sink side ---------------------------------------------------------------------

    async def handle(self, events: Sequence[Event]) -> None:
        """Keep the latest site import and asset power (W); never blocks."""
        for event in events:
            if not isinstance(event, Reading) or event.quantity is not Quantity.POWER:
                continue
            if event.meter_id == self._flex.site_meter_id:
                self.site_import_w = event.value
            for asset_id in self._meter_assets.get(event.meter_id, ()):
                self.assets[asset_id].power_w = event.value

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
        if self._persist_dirty:
            self._save_state()
        return actions

    async def _tick_loop(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a bug in one round must not stop the next (fail-safes still hold)
                self.stats.errors["tick"] += 1
                self._log.log(logging.ERROR, "tick", "Flex tick failed: %r", err)
            self._state_wake()
            await wait_event(self._wake, self._flex.tick_s)

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
            "decisions": list(self.decisions),
            "assets": {
                asset_id: {"allowed": ON if a.allowed else OFF, "state": a.state.value, "power_w": a.power_w}
                for asset_id, a in self.assets.items()
            },
        }

    def _state_wake(self) -> None:
        # Status and achieved reduction change with time and readings, not only with actions.
        if self._state_dirty or self._state_body() != self._published:
            self._state_dirty = True
            self._publish_wake.set()

    def _state_body(self) -> bytes:
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
        source = "manual" if topic == self._manual_topic else "mqtt"
        try:
            event = parse_event_message(payload, source)
        except ParseError as err:
            self.stats.errors["invalid_event"] += 1
            self.stats.gauges["events_rejected"] += 1
            self._log.log(logging.WARNING, "invalid_event", "Flex: rejected invalid event on %s: %s", topic, err)
            return None
        self.submit_event(event)
        return event

    # -- MQTT -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the MQTT, tick and (if any Shelly asset) Shelly RPC tasks."""
        if any(isinstance(a.config.actuator, ShellyActuatorConfig) for a in self.assets.values()):
            self._shelly.start()
        self._tasks = [
            asyncio.create_task(self._connection_loop(), name="flex-mqtt"),
            asyncio.create_task(self._tick_loop(), name="flex-tick"),
        ]
        if self._flex.openadr.enabled:
            from .openadr import FlexVen  # the VEN needs the controller: imported here, not at the top

            self.ven = FlexVen(self._config.site.id, self._flex, self)
            self._tasks.append(asyncio.create_task(self.ven.run(), name="flex-openadr"))

    async def close(self) -> None:
        """Persist and stop. Assets stay as they are: their fail-safes bring them back if we stay away."""
        self._closing = True
        if self._persist_dirty:
            self._save_state()
        self._wake.set()
        self._publish_wake.set()
        await _stop_tasks(self._tasks)
        await self._shelly.close()
        if self.ven is not None:
            await self.ven.stop()
        for asset in self.assets.values():
            if isinstance(asset.actuator, HomeAssistantActuator):
                await asset.actuator.close()

    async def _connection_loop(self) -> None:
        session = MqttSession(self._config.mqtt, f"{self._config.client_id}-flex", name="Flex")

        def down(error: BridgeError) -> None:
            self.stats.connected = False
            self.stats.errors["mqtt"] += 1

        async def body(client: aiomqtt.Client) -> None:
            self._client = client
            self.stats.connected = True
            try:
                await self._run_session(client)
            finally:
                self._client = None

        await session.run(body, on_down=down, closing=lambda: self._closing)

    async def _run_session(self, client: aiomqtt.Client) -> None:
        subscriptions = [self._event_topic, self._manual_topic, self._topics.ha_status, *self.topics.command_filters]
        subscriptions += [a.config.state_topic for a in self._mqtt_actuators.values() if a.config.state_topic]
        for topic in subscriptions:
            await client.subscribe(topic, qos=1)
        self._rediscover = True
        self._state_dirty = True
        self._publish_wake.set()
        publisher = asyncio.create_task(self._publish_loop(client), name="flex-publish")
        try:
            async for message in client.messages:
                await self._on_message(str(message.topic), message.payload)
        finally:
            await _stop_tasks([publisher])

    async def _on_message(self, topic: str, raw: Any) -> None:
        payload = raw if isinstance(raw, bytes) else str(raw).encode()
        if topic in (self._event_topic, self._manual_topic):
            self.handle_event_message(topic, payload)
        elif topic == self._topics.ha_status:
            if payload == b"online":
                self._rediscover = True
                self._publish_wake.set()
        elif topic.startswith(f"{self._config.mqtt.base_topic}/flex/") and topic.endswith("/set"):
            await self.handle_command(topic, payload)
        for actuator in self._mqtt_actuators.values():
            if topic == actuator.config.state_topic:
                actuator.on_state_message(payload)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while not self._closing:
            await self._publish_wake.wait()
            self._publish_wake.clear()
            if self._rediscover:
                self._rediscover = False
                for topic, payload in discovery_messages(
                    self._topics, self.topics, self._config.site.id, list(self._flex.assets)
                ):
                    await client.publish(topic, json.dumps(payload).encode(), qos=1, retain=True)
                self._state_dirty = True
            if self._state_dirty:
                self._state_dirty = False
                body = self._state_body()
                await client.publish(self.topics.state, body, qos=1, retain=True)
                self._published = body


async def _stop_tasks(tasks: list[asyncio.Task[None]], timeout: float = 3.0) -> None:
    """Cancel `tasks` and wait for them, at most `timeout`.

    Python 3.11's `asyncio.wait_for` (used inside aiomqtt's publish) can swallow a
    cancellation that races with its result, so the loops also check `_closing` and
    this never waits forever.
    """
    for task in tasks:
        task.cancel()
    if tasks:
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            _LOGGER.warning("Flex: task %s did not stop in %.0f s", task.get_name(), timeout)
    for task in tasks:
        if task.done() and not task.cancelled():
            with contextlib.suppress(Exception):
                task.result()


def _summary(entry: dict[str, Any] | None) -> str:
    """A one-line text of a decision for the HA sensor (state strings max 255 chars)."""
    if entry is None:
        return "none"
    details = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("ts", "kind", "event"))
    return f"{entry['kind']}: {details}"[:250]
