"""The demand-response policy: a pure function from the situation to switching actions.

No I/O, no clock, no randomness: `decide(situation)` looks at the active event, the
assets (their state, timers and limits), the measured site import and `now`, and says
which assets to switch and why. The controller applies the actions and calls it again
about once a second. Everything that could switch off someone's heating by mistake
lives here, where it is exhaustively tested.

Rules, in the order they win:
1. Safety: an asset that is shed or boosted comes back to normal at once when it
   reached `max_shed_s`, when flex control of it is no longer allowed, when it left its
   allowed time window, when the householder opted out, or when the mode is `off`.
2. Turn-down: while a down event is active, assets are shed in priority order (lowest
   `priority` first) until the measured site import has dropped by the target; an asset
   just switched counts with its expected power for `settle_s` (the meter lags).
3. Turn-up: while an up event is active, absorbing loads are switched on the same way
   until the site import has risen by the target.
4. Import limit: whenever the site imports more than the limit, assets are shed the
   same way; they come back once the headroom covers them again.
5. Restore: after the event (or when the limit no longer needs them) assets return to
   normal one at a time, `stagger_s` apart, so they do not all start together.
Min on/off times are respected for every switching except the safety rule's (which
cannot conflict with `min_off_s` because the config requires `min_off_s <= max_shed_s`).
Power is in W, import positive (see `meterbridge.model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class AssetState(StrEnum):
    """What flex is doing to an asset. The values are published: never rename them."""

    NORMAL = "normal"
    SHED = "shed"
    BOOSTED = "boosted"


class Cause(StrEnum):
    """Why an asset is not in its normal state."""

    EVENT = "event"
    LIMIT = "import_limit"


class Direction(StrEnum):
    """Which way an event asks the site to move: `down` = import less, `up` = import more."""

    DOWN = "down"
    UP = "up"


@dataclass(frozen=True, slots=True)
class EventView:
    """The event the policy acts on (already accepted: participation and mode were checked).

    `baseline_w` is the site import measured when the event started (None: not measured);
    `target_w` is the requested change (positive W, in `direction`).
    """

    event_id: str
    direction: Direction
    target_w: float
    start: datetime
    end: datetime
    baseline_w: float | None
    opted_out: bool = False


@dataclass(frozen=True, slots=True)
class AssetView:
    """One controllable asset as the policy sees it.

    `normal_on`: whether the asset is on when flex leaves it alone. `power_w`: measured
    power (None: no meter), otherwise `rated_power_w` is the estimate. `changed_at`:
    when flex last switched it (None: never). `shed_since`: start of the current
    non-normal period. `used_in_event`: it was already shed/boosted in the current
    event (never twice per event, so `max_shed_s` is a real bound).
    """

    asset_id: str
    priority: int
    rated_power_w: float
    power_w: float | None
    normal_on: bool
    can_boost: bool
    allowed: bool
    in_window: bool
    state: AssetState
    cause: Cause | None
    changed_at: datetime | None
    shed_since: datetime | None
    used_in_event: bool
    min_on_s: float
    min_off_s: float
    max_shed_s: float

    @property
    def expected_w(self) -> float:
        """The power switching it is expected to move (measured when known and positive)."""
        if self.power_w is not None and self.power_w > 0:
            return self.power_w
        return self.rated_power_w

    @property
    def is_on(self) -> bool:
        """Whether flex has it on now."""
        if self.state is AssetState.SHED:
            return False
        if self.state is AssetState.BOOSTED:
            return True
        return self.normal_on


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything `decide` looks at. `import_limit_w` None: no limit; `active`: mode is not off."""

    now: datetime
    active: bool
    event: EventView | None
    assets: tuple[AssetView, ...]
    site_import_w: float | None
    import_limit_w: float | None
    last_restore: datetime | None
    stagger_s: float = 30.0
    settle_s: float = 10.0
    limit_hysteresis_w: float = 200.0


@dataclass(frozen=True, slots=True)
class Action:
    """Switch `asset_id` to `state` (`on` is the relay command that gives it) because `reason`."""

    asset_id: str
    state: AssetState
    on: bool
    cause: Cause | None
    reason: str


def _elapsed(now: datetime, since: datetime | None) -> float:
    return float("inf") if since is None else (now - since).total_seconds()


def _event_running(situation: Situation) -> EventView | None:
    event = situation.event
    if event is None or not situation.active or event.opted_out:
        return None
    if not event.start <= situation.now < event.end:
        return None
    return event


def _restore(asset: AssetView, reason: str) -> Action:
    return Action(asset.asset_id, AssetState.NORMAL, asset.normal_on, None, reason)


def _safety(situation: Situation, asset: AssetView) -> str | None:
    """Why `asset` must return to normal at once (None: no reason)."""
    if asset.state is AssetState.NORMAL:
        return None
    if _elapsed(situation.now, asset.shed_since) >= asset.max_shed_s:
        return "max_shed_s reached"
    if not situation.active:
        return "mode off"
    if not asset.allowed:
        return "flex control not allowed"
    if not asset.in_window:
        return "outside allowed time window"
    event = situation.event
    if asset.cause is Cause.EVENT and event is not None and event.opted_out:
        return "householder opted out"
    return None


def _timer_ok(situation: Situation, asset: AssetView, to_on: bool) -> bool:
    """Min on/off times: an asset switched on stays on `min_on_s`, off stays off `min_off_s`."""
    if to_on == asset.is_on:
        return True
    held = _elapsed(situation.now, asset.changed_at)
    return held >= (asset.min_off_s if not asset.is_on else asset.min_on_s)


def _pending_w(situation: Situation, assets: tuple[AssetView, ...], state: AssetState) -> float:
    """Power of assets switched to `state` within `settle_s`: the meter has not seen it yet."""
    return sum(
        a.expected_w for a in assets if a.state is state and _elapsed(situation.now, a.changed_at) < situation.settle_s
    )


def _candidates(situation: Situation, assets: tuple[AssetView, ...], boost: bool) -> list[AssetView]:
    chosen = []
    for asset in sorted(assets, key=lambda a: (a.priority, a.asset_id)):
        if asset.state is not AssetState.NORMAL or not asset.allowed or not asset.in_window:
            continue
        if asset.used_in_event and situation.event is not None:
            continue
        if boost and (not asset.can_boost or asset.normal_on):
            continue
        if not boost and not asset.normal_on:
            continue
        if asset.max_shed_s <= 0 or not _timer_ok(situation, asset, to_on=boost):
            continue
        chosen.append(asset)
    return chosen


def _pick(candidates: list[AssetView], shortfall_w: float) -> list[AssetView]:
    """Assets in order until their expected power covers `shortfall_w`."""
    picked: list[AssetView] = []
    covered = 0.0
    for asset in candidates:
        if covered >= shortfall_w:
            break
        picked.append(asset)
        covered += asset.expected_w
    return picked


def _event_actions(situation: Situation, event: EventView, assets: tuple[AssetView, ...]) -> list[Action]:
    boost = event.direction is Direction.UP
    state = AssetState.BOOSTED if boost else AssetState.SHED
    measured = 0.0
    if event.baseline_w is not None and situation.site_import_w is not None:
        change = situation.site_import_w - event.baseline_w
        measured = max(0.0, change if boost else -change)
    else:
        # No site meter: trust the expected power of what is already switched.
        measured = sum(a.expected_w for a in assets if a.state is state and a.cause is Cause.EVENT)
        measured -= _pending_w(situation, assets, state)
    shortfall = event.target_w - measured - _pending_w(situation, assets, state)
    if shortfall <= 0:
        return []
    reason = f"event {event.event_id}: {'turn-up' if boost else 'turn-down'} short by {shortfall:.0f} W"
    return [
        Action(a.asset_id, state, boost, Cause.EVENT, reason)
        for a in _pick(_candidates(situation, assets, boost), shortfall)
    ]


def _limit_actions(situation: Situation, assets: tuple[AssetView, ...]) -> list[Action]:
    limit, site = situation.import_limit_w, situation.site_import_w
    if limit is None or site is None or site <= limit:
        return []
    excess = site - limit - _pending_w(situation, assets, AssetState.SHED)
    if excess <= 0:
        return []
    reason = f"import {site:.0f} W over limit {limit:.0f} W"
    return [
        Action(a.asset_id, AssetState.SHED, False, Cause.LIMIT, reason)
        for a in _pick(_candidates(situation, assets, boost=False), excess)
    ]


def _restorable(situation: Situation, asset: AssetView, event: EventView | None) -> bool:
    """Whether a non-normal asset may come back now (its reason for being off has gone)."""
    if not _timer_ok(situation, asset, to_on=asset.normal_on):
        return False
    if asset.cause is Cause.EVENT:
        return event is None
    # Held for the import limit: back only if the limit (and an event) no longer needs it.
    if event is not None and event.direction is Direction.DOWN:
        return False
    limit, site = situation.import_limit_w, situation.site_import_w
    if limit is None:
        return True
    if site is None:
        return False  # cannot tell whether it would breach the limit: keep it off (max_shed_s still bounds it)
    return site + asset.expected_w <= limit - situation.limit_hysteresis_w


def decide(situation: Situation) -> list[Action]:
    """The actions to take now, each naming its reason; at most one action per asset."""
    actions: list[Action] = []
    decided: set[str] = set()
    for asset in situation.assets:
        why = _safety(situation, asset)
        if why is not None:
            actions.append(_restore(asset, why))
            decided.add(asset.asset_id)
    if not situation.active:
        return actions
    remaining = tuple(a for a in situation.assets if a.asset_id not in decided)
    event = _event_running(situation)
    new = _event_actions(situation, event, remaining) if event is not None else []
    new += [a for a in _limit_actions(situation, remaining) if a.asset_id not in {n.asset_id for n in new}]
    actions += new
    decided.update(a.asset_id for a in new)
    # Staggered restore: one asset per `stagger_s`, highest priority number first (the
    # last shed comes back first).
    if _elapsed(situation.now, situation.last_restore) >= situation.stagger_s:
        waiting = [
            a
            for a in remaining
            if a.state is not AssetState.NORMAL and a.asset_id not in decided and _restorable(situation, a, event)
        ]
        waiting.sort(key=lambda a: (-a.priority, a.asset_id))
        if waiting:
            first = waiting[0]
            actions.append(_restore(first, "event over" if first.cause is Cause.EVENT else "import back under limit"))
    return actions


def fail_safe_s(situation: Situation, asset: AssetView, failsafe_s: float) -> float | None:
    """The device-side fail-safe for a non-normal asset: `failsafe_s`, cut to what `max_shed_s` leaves.

    None for an asset in its normal state (no fail-safe needed).
    """
    if asset.state is AssetState.NORMAL:
        return None
    left = asset.max_shed_s - _elapsed(situation.now, asset.shed_since)
    return max(1.0, min(failsafe_s, left))
