"""Chaos: `kill -9` of a real `meter-bridge run` every few seconds, restarted at once each time.

Each run gets its own `site` tag, so what every run emitted can be told apart in VictoriaMetrics
(a restarted `simulated` source starts its totals again from `start_import_kwh`, like a new meter;
a real meter's totals come from the meter, not from the bridge).

- Loss per kill: the meters run at `speed: 1`, so a reading's timestamp is when it was emitted;
  a run's readings must all be there up to its newest one (no gap), and the newest one should be at
  most `spool.sync_interval_s` (1 s) before the kill: that second is what a kill may cost (the
  figure's verdict; a loaded machine delays the syncer, so it is measured, not asserted).
- No duplicate energy totals: no meter + timestamp holds two different `energy_import` values, and
  the totals of a run never decrease. A batch that InfluxDB acknowledged just before the kill, whose
  spool row was not yet deleted, is sent again after the restart: InfluxDB overwrites a point with
  the same series and timestamp, VictoriaMetrics keeps both copies; these identical copies are counted
  and reported, not failed.
- No corrupted spool: `PRAGMA integrity_check` is `ok` after every kill.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
import time
from pathlib import Path

import pytest

from helpers.bridgeproc import BridgeProcess
from helpers.chaos import GRID_QUANTITIES, landed, settled_export, simulated_sources, wait_export
from helpers.figures import record as record_figure
from helpers.figures import scale
from helpers.mosquitto import Mosquitto
from helpers.victoria import Victoria

METERS = 3
INTERVAL_S = 0.1
KILLS = scale(4, 20)


def config(broker: Mosquitto, victoria: Victoria, spool: Path, run: int, base_topic: str) -> str:
    return (
        f"site: {{id: run{run:02d}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bridge, password: '${{MQTT_PASSWORD}}', "
        f"base_topic: {base_topic}}}\n"
        f"homeassistant: {{discovery_prefix: {base_topic}/ha}}\n"
        "health: {port: {health_port}}\n"
        f"influx: {{url: '{victoria.url}', token: '${{INFLUX_TOKEN}}', replication_poll_s: 0}}\n"
        f"spool: {{path: '{spool}', sync_interval_s: 1.0}}\n"
        "sources:\n" + simulated_sources(METERS, INTERVAL_S, 1.0)
    )


def integrity(spool: Path) -> str:
    db = sqlite3.connect(spool)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


@pytest.mark.slow
def test_kill9_every_few_seconds(
    tmp_path: Path, broker: Mosquitto, victoria: Victoria, base_topic: str, request: pytest.FixtureRequest
) -> None:
    spool = tmp_path / "spool.sqlite"
    rng = random.Random(13)  # noqa: S311 - test timing, not crypto
    bridge = BridgeProcess(
        tmp_path / "bridge", "", env={"MQTT_PASSWORD": broker.password("bridge"), "INFLUX_TOKEN": "t0ken"}
    )
    killed_at: dict[str, float] = {}
    checks: list[str] = []
    try:
        for run in range(KILLS):
            bridge.start(config(broker, victoria, spool, run, base_topic))
            time.sleep(rng.uniform(2.0, 4.0))
            killed_at[f"run{run:02d}"] = time.time()
            bridge.kill9()
            checks.append(integrity(spool))
        # a last run replays what the last kill left in the spool, then stops cleanly
        bridge.start(config(broker, victoria, spool, KILLS, base_topic))
        wait_export(
            victoria,
            '{__name__=~"simulated_.*"}',
            lambda s: len({x.labels["site"] for x in s}) > KILLS,
            60,
        )
        # the replay is over when the spool is empty (waited for, not assumed after 3 s; the
        # bound only stops a hang)
        deadline = time.monotonic() + 120
        while (health := bridge.health()) is None or health["sinks"]["influx"].get("spool_readings", 1) != 0:
            assert time.monotonic() < deadline, f"the spool never drained: {health}"
            time.sleep(0.2)
    finally:
        bridge.stop()
    series = settled_export(victoria, '{__name__=~"simulated_.*"}')
    checks.append(integrity(spool))
    lost_s: list[float] = []
    lost_readings: list[int] = []
    same_dup = conflicting = decreasing = 0
    for site, kill_time in killed_at.items():
        runs = landed([s for s in series if s.labels["site"] == site], INTERVAL_S)
        assert len(runs) == METERS, f"{site}: every meter landed"
        for meter, item in runs.items():
            newest_s = (item.first_ms + item.last_step * INTERVAL_S * 1000) / 1000
            lost_s.append(kill_time - newest_s)
            gaps = item.missing()
            lost_readings.append(gaps + round((kill_time - newest_s) / INTERVAL_S) * len(GRID_QUANTITIES))
            assert gaps == 0, f"{site}/{meter}: {gaps} readings missing before the newest one"
            same_dup += item.same_duplicates
            conflicting += item.conflicting_duplicates
        for s in series:
            if s.labels["site"] == site and s.labels["__name__"] == "simulated_energy_import":
                ordered = [v for _, v in sorted(zip(s.timestamps, s.values, strict=True))]
                decreasing += sum(1 for a, b in itertools.pairwise(ordered) if b < a)
    worst = max(lost_s)
    ok = worst <= 1.0 and conflicting == 0 and decreasing == 0 and set(checks) == {"ok"}
    record_figure(
        "chaos_kill9",
        area="Chaos",
        check=f"`kill -9` of `meter-bridge run` every 2-4 s, {KILLS} times ({METERS} meters at {INTERVAL_S} s)",
        goal="readings lost per kill <= 1 s worth; no duplicate energy totals; spool not corrupted",
        measured=(
            f"lost per kill: median {sorted(lost_s)[len(lost_s) // 2]:.2f} s, worst {worst:.2f} s "
            f"(<= {max(lost_readings)} readings per meter); {conflicting} conflicting energy totals, "
            f"{decreasing} decreasing steps, {same_dup} identical re-sent copies (InfluxDB overwrites them); "
            f"integrity_check ok {checks.count('ok')}/{len(checks)}"
        ),
        ok=ok,
        test=request.node.nodeid,
    )
    assert set(checks) == {"ok"}
    assert conflicting == 0
    assert decreasing == 0
    # How many seconds a kill cost is the figure's verdict (goal 1 s), not a test: it is the
    # syncer's tick as the machine's load delays it. What a test can hold is counted above: every
    # run's readings are there up to its newest one (no gap), totals sound, the spool intact.
