"""The flex policy: examples of each rule and hypothesis properties of the safety invariants."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from meterbridge.flex.policy import (
    Action,
    AssetState,
    AssetView,
    Cause,
    Direction,
    EventView,
    Situation,
    decide,
    fail_safe_s,
)

T0 = datetime(2026, 11, 21, 17, 0, tzinfo=UTC)


def asset(asset_id: str = "a", **kw: object) -> AssetView:
    base = AssetView(
        asset_id=asset_id,
        priority=1,
        rated_power_w=1000.0,
        power_w=None,
        normal_on=True,
        can_boost=False,
        allowed=True,
        in_window=True,
        state=AssetState.NORMAL,
        cause=None,
        changed_at=None,
        shed_since=None,
        used_in_event=False,
        min_on_s=60.0,
        min_off_s=60.0,
        max_shed_s=3600.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def down_event(target: float = 1500.0, baseline: float | None = 3000.0, **kw: object) -> EventView:
    base = EventView("e1", Direction.DOWN, target, T0, T0 + timedelta(hours=1), baseline)
    return replace(base, **kw)  # type: ignore[arg-type]


def situation(*assets: AssetView, **kw: object) -> Situation:
    base = Situation(
        now=T0 + timedelta(seconds=1),
        active=True,
        event=None,
        assets=assets,
        site_import_w=3000.0,
        import_limit_w=None,
        last_restore=None,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def by_id(actions: list[Action]) -> dict[str, Action]:
    return {a.asset_id: a for a in actions}


def test_turn_down_sheds_by_priority_until_the_target_is_covered() -> None:
    assets = (asset("heater", priority=1, power_w=800.0), asset("ev", priority=2), asset("hp", priority=3))
    actions = by_id(decide(situation(*assets, event=down_event(1500.0))))
    assert set(actions) == {"heater", "ev"}
    assert all(a.state is AssetState.SHED and a.on is False and a.cause is Cause.EVENT for a in actions.values())


def test_measured_drop_counts_and_pending_switches_count_until_the_meter_settles() -> None:
    shed = asset("heater", state=AssetState.SHED, cause=Cause.EVENT, changed_at=T0, shed_since=T0, used_in_event=True)
    spare = asset("ev", priority=2)
    # The meter has not seen the heater go off yet (1 s ago): nothing more is shed.
    assert decide(situation(shed, spare, event=down_event(900.0))) == []
    # 30 s later the meter shows only 200 W of the 900 W asked for: the next asset goes.
    later = situation(shed, spare, event=down_event(900.0), now=T0 + timedelta(seconds=30), site_import_w=2800.0)
    assert [a.asset_id for a in decide(later)] == ["ev"]
    # ...and once the drop is measured, nothing else is touched.
    done = situation(shed, spare, event=down_event(900.0), now=T0 + timedelta(seconds=30), site_import_w=2000.0)
    assert decide(done) == []


def test_turn_up_switches_absorbing_loads_on() -> None:
    battery = asset("battery", normal_on=False, can_boost=True)
    heater = asset("heater")  # normally on: never "boosted"
    event = down_event(500.0, direction=Direction.UP)
    actions = decide(situation(battery, heater, event=event))
    assert [(a.asset_id, a.state, a.on) for a in actions] == [("battery", AssetState.BOOSTED, True)]


def test_import_limit_is_held_and_released_with_hysteresis() -> None:
    heater = asset("heater", power_w=2000.0)
    actions = decide(situation(heater, site_import_w=5000.0, import_limit_w=4000.0))
    assert [(a.asset_id, a.cause) for a in actions] == [("heater", Cause.LIMIT)]
    held = asset("heater", power_w=2000.0, state=AssetState.SHED, cause=Cause.LIMIT, changed_at=T0, shed_since=T0)
    later = T0 + timedelta(seconds=120)
    assert decide(situation(held, now=later, site_import_w=3000.0, import_limit_w=4000.0)) == []  # would breach
    back = decide(situation(held, now=later, site_import_w=1500.0, import_limit_w=4000.0))
    assert [(a.asset_id, a.state, a.on) for a in back] == [("heater", AssetState.NORMAL, True)]


def test_restore_after_the_event_is_staggered_and_respects_min_off() -> None:
    after = T0 + timedelta(hours=1, seconds=1)
    shed = [
        asset(
            i,
            priority=p,
            state=AssetState.SHED,
            cause=Cause.EVENT,
            changed_at=T0,
            shed_since=T0,
            used_in_event=True,
            max_shed_s=7200.0,
        )
        for i, p in (("a", 1), ("b", 2), ("c", 3))
    ]
    first = decide(situation(*shed, event=down_event(), now=after))
    assert [(a.asset_id, a.state) for a in first] == [("c", AssetState.NORMAL)]  # last shed, first back
    # Within stagger_s of that restore nothing else comes back.
    assert decide(situation(*shed[:2], event=down_event(), now=after, last_restore=after - timedelta(seconds=5))) == []
    # min_off_s holds an asset switched off only 10 s ago.
    fresh = replace(shed[0], changed_at=after - timedelta(seconds=10), shed_since=after - timedelta(seconds=10))
    assert decide(situation(fresh, event=down_event(), now=after)) == []


def test_opt_out_restores_everything_at_once_even_inside_min_off() -> None:
    now = T0 + timedelta(seconds=5)
    shed = [
        asset(i, state=AssetState.SHED, cause=Cause.EVENT, changed_at=T0, shed_since=T0, used_in_event=True)
        for i in "abc"
    ]
    actions = decide(situation(*shed, event=down_event(opted_out=True), now=now, last_restore=now))
    assert sorted(a.asset_id for a in actions) == ["a", "b", "c"]
    assert all(a.on and a.state is AssetState.NORMAL and a.reason == "householder opted out" for a in actions)


def test_nothing_stays_off_past_max_shed_and_is_not_shed_again_in_that_event() -> None:
    now = T0 + timedelta(seconds=600)
    shed = asset(
        "a",
        state=AssetState.SHED,
        cause=Cause.EVENT,
        changed_at=T0,
        shed_since=T0,
        used_in_event=True,
        max_shed_s=600.0,
        min_off_s=600.0,
    )
    actions = decide(situation(shed, event=down_event(), now=now))
    assert [(a.asset_id, a.on, a.reason) for a in actions] == [("a", True, "max_shed_s reached")]
    back = asset("a", used_in_event=True, changed_at=now, max_shed_s=600.0)
    assert decide(situation(back, event=down_event(), now=now + timedelta(seconds=120))) == []


def test_fail_safe_is_cut_to_what_max_shed_leaves() -> None:
    shed = asset("a", state=AssetState.SHED, cause=Cause.EVENT, shed_since=T0, max_shed_s=400.0)
    s = situation(shed, now=T0 + timedelta(seconds=300))
    assert fail_safe_s(s, shed, 300.0) == 100.0
    assert fail_safe_s(s, asset("b"), 300.0) is None


# --- properties ------------------------------------------------------------------------------

STATES = st.sampled_from(list(AssetState))
times = st.integers(min_value=0, max_value=10_000)


@st.composite
def asset_views(draw: st.DrawFn, index: int) -> AssetView:
    state = draw(STATES)
    changed = draw(st.one_of(st.none(), times))
    shed_since = draw(times) if state is not AssetState.NORMAL else None
    normal_on = draw(st.booleans())
    return asset(
        f"a{index}",
        priority=draw(st.integers(0, 5)),
        rated_power_w=draw(st.floats(100, 10_000)),
        power_w=draw(st.one_of(st.none(), st.floats(-100, 10_000))),
        normal_on=normal_on,
        can_boost=draw(st.booleans()),
        allowed=draw(st.booleans()),
        in_window=draw(st.booleans()),
        state=state,
        cause=draw(st.sampled_from(list(Cause))) if state is not AssetState.NORMAL else None,
        changed_at=None if changed is None else T0 + timedelta(seconds=changed),
        shed_since=None if shed_since is None else T0 + timedelta(seconds=shed_since),
        used_in_event=draw(st.booleans()),
        min_on_s=draw(st.floats(0, 600)),
        min_off_s=draw(st.floats(0, 600)),
        max_shed_s=draw(st.floats(600, 7200)),
    )


@st.composite
def situations(draw: st.DrawFn) -> Situation:
    n = draw(st.integers(0, 6))
    assets = tuple(draw(asset_views(i)) for i in range(n))
    event = None
    if draw(st.booleans()):
        start = T0 + timedelta(seconds=draw(times))
        event = EventView(
            "e",
            draw(st.sampled_from(list(Direction))),
            draw(st.floats(1, 20_000)),
            start,
            start + timedelta(seconds=draw(st.integers(1, 7200))),
            draw(st.one_of(st.none(), st.floats(-5000, 20_000))),
            draw(st.booleans()),
        )
    last = draw(st.one_of(st.none(), times))
    return Situation(
        now=T0 + timedelta(seconds=draw(st.integers(0, 20_000))),
        active=draw(st.booleans()),
        event=event,
        assets=assets,
        site_import_w=draw(st.one_of(st.none(), st.floats(-10_000, 30_000))),
        import_limit_w=draw(st.one_of(st.none(), st.floats(100, 20_000))),
        last_restore=None if last is None else T0 + timedelta(seconds=last),
        stagger_s=draw(st.floats(0, 60)),
        settle_s=draw(st.floats(0, 30)),
    )


def held(s: Situation, a: AssetView) -> float:
    return float("inf") if a.changed_at is None else (s.now - a.changed_at).total_seconds()


@settings(max_examples=600, deadline=None)
@given(situations())
def test_safety_invariants(s: Situation) -> None:
    actions = decide(s)
    views = {a.asset_id: a for a in s.assets}
    # at most one action per asset, and only for known assets
    assert len({a.asset_id for a in actions}) == len(actions)
    assert all(a.asset_id in views for a in actions)
    for action in actions:
        view = views[action.asset_id]
        # an action's relay command matches the state it claims
        expected_on = {AssetState.SHED: False, AssetState.BOOSTED: True, AssetState.NORMAL: view.normal_on}
        assert action.on is expected_on[action.state]
        if action.state is AssetState.NORMAL:
            assert view.state is not AssetState.NORMAL  # restoring something that is away
            continue
        # flex only leaves normal when allowed, in the window, active, and not twice per event
        assert view.state is AssetState.NORMAL
        assert s.active
        assert view.allowed
        assert view.in_window
        assert not (view.used_in_event and s.event is not None)
        # min on/off times are respected by every switch away from normal
        if action.on != view.is_on:
            assert held(s, view) >= (view.min_on_s if view.is_on else view.min_off_s)
        # a shed needs a running event (not opted out) or an import over the limit
        if action.cause is Cause.EVENT:
            assert s.event is not None
            assert not s.event.opted_out
            assert s.event.start <= s.now < s.event.end
        else:
            assert s.import_limit_w is not None
            assert s.site_import_w is not None
            assert s.site_import_w > s.import_limit_w
    for view in s.assets:
        away = view.state is not AssetState.NORMAL
        over = view.shed_since is None or (s.now - view.shed_since).total_seconds() >= view.max_shed_s
        must_return = away and (over or not s.active or not view.allowed or not view.in_window)
        if must_return:
            assert any(a.asset_id == view.asset_id and a.state is AssetState.NORMAL for a in actions)
    # non-safety restores are staggered: at most one, and none within stagger_s of the last
    routine = [a for a in actions if a.reason in ("event over", "import back under limit")]
    assert len(routine) <= 1
    if routine and s.last_restore is not None:
        assert (s.now - s.last_restore).total_seconds() >= s.stagger_s


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 3), st.floats(200, 3000), st.floats(0, 300), st.floats(300, 1800)),
        min_size=1,
        max_size=5,
    ),
    st.floats(100, 10_000),
    st.integers(60, 4 * 3600),
    st.lists(st.booleans(), min_size=1, max_size=50),
)
def test_closed_loop_never_exceeds_max_shed(
    specs: list[tuple[int, float, float, float]], target: float, duration: int, allow_flips: list[bool]
) -> None:
    """Simulate an event tick by tick (site import follows the assets): bounds hold throughout."""
    assets = {
        f"a{i}": asset(f"a{i}", priority=p, rated_power_w=w, min_off_s=mo, min_on_s=mo, max_shed_s=ms)
        for i, (p, w, mo, ms) in enumerate(specs)
    }
    event = down_event(target, baseline=None)
    event = replace(
        event, end=T0 + timedelta(seconds=duration), baseline_w=sum(a.rated_power_w for a in assets.values())
    )
    last_restore = None
    for step in range(0, duration + 3600, 10):
        now = T0 + timedelta(seconds=step)
        if step % 600 == 0:  # the householder flips "allow" on one asset now and then
            key = sorted(assets)[(step // 600) % len(assets)]
            assets[key] = replace(assets[key], allowed=allow_flips[(step // 600) % len(allow_flips)])
        site = sum(a.rated_power_w for a in assets.values() if a.is_on)
        s = situation(*assets.values(), now=now, event=event, site_import_w=site, last_restore=last_restore)
        for action in decide(s):
            view = assets[action.asset_id]
            if action.state is AssetState.NORMAL and action.reason == "event over":
                last_restore = now
            assets[action.asset_id] = replace(
                view,
                state=action.state,
                cause=action.cause,
                changed_at=now if action.on != view.is_on else view.changed_at,
                shed_since=None if action.state is AssetState.NORMAL else now,
                used_in_event=view.used_in_event or action.state is not AssetState.NORMAL,
            )
        for view in assets.values():
            if view.state is AssetState.SHED:
                assert view.shed_since is not None
                # ticks are 10 s apart: an asset is back within one tick of max_shed_s
                assert (now - view.shed_since).total_seconds() < view.max_shed_s + 10
                assert view.allowed or (now - view.shed_since).total_seconds() < 10
    # an hour after the event everything is back to normal
    assert all(v.state is AssetState.NORMAL for v in assets.values())
