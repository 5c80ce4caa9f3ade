"""Shared pieces of the chaos tests: simulated-meter configs and "what landed" analysis.

Loss is counted without trusting the bridge's own counters: a `simulated` meter emits one
reading per quantity at `t0 + k * interval_s` for k = 1, 2, ... (simulated time), so every
step between the first and the last one stored must be there for every quantity; a missing
step is a lost reading.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from .victoria import Series, Victoria

#: What a `grid` simulated meter without PV emits per step (one reading each).
GRID_QUANTITIES = ("power", "energy_import", "voltage", "current", "frequency")


def simulated_sources(n: int, interval_s: float, speed: float, prefix: str = "m") -> str:
    """YAML list items of `n` grid meters `<prefix>00`... (two-space indent under `sources:`)."""
    return "".join(
        f"  - {{type: simulated, id: {prefix}{i:02d}, interval_s: {interval_s}, speed: {speed}, seed: {i}, "
        f"start_import_kwh: {1000 + i}}}\n"
        for i in range(n)
    )


def export_all(vm: Victoria, match: str) -> list[Series]:
    """Every sample of the series matching `match`, including timestamps in the future
    (a fast simulated source runs ahead of the clock; the export API stops at "now" by default)."""
    query = urllib.parse.urlencode({"match[]": match, "start": "0", "end": str(int(time.time()) + 3 * 86400)})
    with urllib.request.urlopen(f"{vm.url}/api/v1/export?{query}", timeout=60) as response:  # noqa: S310
        body = response.read().decode()
    return [
        Series(item["metric"], item["values"], item["timestamps"])
        for item in (json.loads(line) for line in body.splitlines() if line.strip())
    ]


def wait_export(vm: Victoria, match: str, until: Callable[[list[Series]], bool], timeout: float) -> list[Series]:
    """Poll `export_all` until `until` holds (the last result after `timeout`)."""
    deadline = time.monotonic() + timeout
    series = export_all(vm, match)
    while not until(series) and time.monotonic() < deadline:
        time.sleep(0.5)
        series = export_all(vm, match)
    return series


def settled_export(vm: Victoria, match: str, timeout: float = 60.0) -> list[Series]:
    """`export_all` once nothing more is coming: two exports 1 s apart hold the same samples.

    For counting what landed after the writers stopped: VictoriaMetrics shows new rows only after
    its in-memory buffers are flushed (about a second), so one export right away may miss some of
    the last step's quantities. `timeout` is a hang bound only.
    """
    deadline = time.monotonic() + timeout
    series = export_all(vm, match)
    while True:
        time.sleep(1.0)
        again = export_all(vm, match)
        if sum(len(s.timestamps) for s in again) == sum(len(s.timestamps) for s in series):
            return again
        assert time.monotonic() < deadline, "VictoriaMetrics still taking samples after the writers stopped"
        series = again


@dataclass
class Landed:
    """What landed for one meter: per quantity, the step indexes seen (relative to the first)."""

    steps: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    first_ms: int = 0
    #: (quantity, ts) stored more than once with the same value / with different values.
    same_duplicates: int = 0
    conflicting_duplicates: int = 0

    @property
    def last_step(self) -> int:
        """The newest step any quantity reached."""
        return max((max(s) for s in self.steps.values() if s), default=-1)

    def missing(self, upto: int | None = None) -> int:
        """Readings missing between the first step and `upto` (default: the newest step), all quantities."""
        last = self.last_step if upto is None else upto
        return sum(len(set(range(last + 1)) - self.steps.get(q, set())) for q in GRID_QUANTITIES)


def landed(series: list[Series], interval_s: float, group: str = "meter") -> dict[str, Landed]:
    """Group exported `simulated_<quantity>` series by the `group` label into `Landed`."""
    interval_ms = interval_s * 1000
    firsts: dict[str, int] = {}
    for s in series:
        if s.timestamps:
            key = s.labels[group]
            firsts[key] = min(firsts.get(key, min(s.timestamps)), min(s.timestamps))
    out: dict[str, Landed] = {key: Landed(first_ms=first) for key, first in firsts.items()}
    for s in series:
        if not s.timestamps:
            continue
        key, quantity = s.labels[group], s.labels["__name__"].removeprefix("simulated_")
        item = out[key]
        seen: dict[int, float] = {}
        for ts, value in zip(s.timestamps, s.values, strict=True):
            if ts in seen:
                if seen[ts] == value:
                    item.same_duplicates += 1
                else:
                    item.conflicting_duplicates += 1
            seen[ts] = value
            item.steps[quantity].add(round((ts - item.first_ms) / interval_ms))
    return out
