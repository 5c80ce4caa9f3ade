"""Writes the comparison table (ours vs the anchors) into `docs/benchmarks.md`.

`bench_ingest.py` and `bench_emu2.py` leave their medians in `.cache/bench/*.json`; this
renders whatever is there between the markers below, keeping the rest of the file.
Run alone to re-render: `.venv/bin/python tests/bench/report.py`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / ".cache" / "bench"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench-compare:begin -->", "<!-- bench-compare:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def _ingest_rows(data: dict[str, Any]) -> list[str]:
    med = data["median"]
    b, r, c = med.get("bridge"), med.get("nodered"), med.get("ceiling")
    rows: list[str] = []
    if b and r:
        rows += [
            f"| ingest, max-rate burst of {_n(b['burst_sent'])} (msg/s landed) | {_n(b['burst_msg_per_s'])} | "
            f"Node-RED {_n(r['burst_msg_per_s'])} | {_ratio(b['burst_msg_per_s'], r['burst_msg_per_s'])} | "
            ">= 2x Node-RED | Node-RED ~15,000 |",
            f"| points landed / sent, burst | {_n(b['burst_landed'])} / {_n(b['burst_sent'])} | "
            f"{_n(r['burst_landed'])} / {_n(r['burst_sent'])} | - | every reading | - |",
            f"| points landed / sent, {_n(data['args']['rate'])}/s | {_n(b['paced_landed'])} / {_n(b['paced_sent'])} | "
            f"{_n(r['paced_landed'])} / {_n(r['paced_sent'])} | - | every reading | - |",
            f"| CPU-s per 10k msgs at {_n(data['args']['rate'])}/s | {_n(b['paced_cpu_s_per_10k'], 2)} | "
            f"{_n(r['paced_cpu_s_per_10k'], 2)} | {_ratio(b['paced_cpu_s_per_10k'], r['paced_cpu_s_per_10k'])} | "
            "<= 0.33x | Node-RED 1.82 |",
            f"| CPU-s per 10k msgs in the burst | {_n(b['burst_cpu_s_per_10k'], 2)} | "
            f"{_n(r['burst_cpu_s_per_10k'], 2)} | {_ratio(b['burst_cpu_s_per_10k'], r['burst_cpu_s_per_10k'])} | - | "
            "Node-RED 0.58 |",
            f"| latency publish -> HA state at {_n(data['args']['rate'])}/s, p50 (ms) | {_n(b['p50_ms'], 2)} | "
            f"{_n(r['p50_ms'], 2)} | {_ratio(b['p50_ms'], r['p50_ms'])} | - | - |",
            f"| latency publish -> HA state at {_n(data['args']['rate'])}/s, p99 (ms) | {_n(b['p99_ms'], 1)} | "
            f"{_n(r['p99_ms'], 1)} | {_ratio(b['p99_ms'], r['p99_ms'])} | <= 2 ms | Node-RED 2.8 |",
            f"| RSS idle / peak (MiB) | {_n(b['idle_rss_mib'])} / {_n(b['peak_rss_mib'])} | "
            f"{_n(r['idle_rss_mib'])} / {_n(r['peak_rss_mib'])} | {_ratio(b['peak_rss_mib'], r['peak_rss_mib'])} | "
            "<= 60 MB, bounded | Node-RED 121 idle, 134-388 |",
        ]
    if c:
        f = c["floor"]
        ours = f"{_n(b['burst_msg_per_s'])}" if b else "-"
        ratio = _ratio(b["burst_msg_per_s"], c["msg_per_s"]) if b else "-"
        rows += [
            f"| Mosquitto C -> C, {c['payload_bytes']}-byte JSON, QoS 0 (msg/s) | {ours} | {_n(c['msg_per_s'])} | "
            f"{ratio} | ceiling | ~110,000 |",
            f"| Mosquitto broker CPU-s per 10k (C -> C) | - | {_n(c['broker_cpu_s_per_10k'], 3)} | - | - | 0.07 |",
            f"| measurement floor: publisher -> subscriber, no system, p50 / p99 (ms) | - | "
            f"{_n(f['p50_ms'], 2)} / {_n(f['p99_ms'], 1)} | - | - | - |",
        ]
    return rows


def _before_after_rows(data: dict[str, Any]) -> list[str]:
    """Rows of the before/after table: `--before`'s build, this build and Node-RED, all from one run."""
    med = data["median"]
    before, after, red = med.get("before"), med.get("bridge"), med.get("nodered")
    if not (before and after):
        return []
    rate = _n(data["args"]["rate"])
    figures = [
        (f"ingest, max-rate burst of {_n(after['burst_sent'])} (msg/s landed)", "burst_msg_per_s", 0, ">= 2x Node-RED"),
        ("points landed, burst", "burst_landed", 0, "every reading"),
        (f"points landed, {rate}/s", "paced_landed", 0, "every reading"),
        (f"CPU-s per 10k msgs at {rate}/s", "paced_cpu_s_per_10k", 2, "<= 0.33x Node-RED"),
        ("CPU-s per 10k msgs in the burst", "burst_cpu_s_per_10k", 2, "-"),
        (f"latency publish -> HA state at {rate}/s, p50 (ms)", "p50_ms", 2, "-"),
        (f"latency publish -> HA state at {rate}/s, p99 (ms)", "p99_ms", 1, "<= 2 ms"),
        ("RSS idle (MiB)", "idle_rss_mib", 0, "<= 60 MB"),
        ("RSS peak (MiB)", "peak_rss_mib", 0, "bounded"),
    ]
    rows = [
        "| figure | before | after | Node-RED (same run) | after / Node-RED | goal |",
        "|---|---|---|---|---|---|",
    ]
    for label, key, digits, goal in figures:
        theirs = red.get(key) if red else None
        rows.append(
            f"| {label} | {_n(before[key], digits)} | {_n(after[key], digits)} | "
            f"{_n(theirs, digits) if theirs is not None else '-'} | "
            f"{_ratio(after[key], theirs) if theirs is not None else '-'} | {goal} |"
        )
    return rows


def _emu2_rows(data: dict[str, Any]) -> list[str]:
    med = data["median"]
    ours, theirs = med.get("ours"), med.get("aioraven")
    if not ours:
        return []
    rows = []
    last = max(ours["marks"], key=int)
    t_rate = theirs["marks"][last]["rate"] if theirs else 0
    rate = ours["marks"][last]["rate"]
    rows.append(
        f"| EMU-2 parser, {int(last):,} fragments in 64-byte chunks (fragments/s) | {_n(rate)} | "
        f"aioraven {_n(t_rate)} | {_ratio(ours['marks'][last]['rate'], t_rate)} | >= 5x | aioraven ~41,000 |"
    )
    for mark in sorted(ours["marks"], key=int):
        t_rss = _n(theirs["marks"][mark]["rss_mib"]) if theirs and mark in theirs["marks"] else "-"
        rows.append(
            f"| EMU-2 parser RSS after {int(mark):,} fragments (MiB) | {_n(ours['marks'][mark]['rss_mib'])} | "
            f"{t_rss} | - | flat | aioraven 1.5 GB after 1M |"
        )
    return rows


def render() -> str:
    """The markdown section (between the markers) from the saved results."""
    ingest, emu2 = _load("ingest"), _load("emu2")
    lines = [
        BEGIN,
        "## Against the alternatives (issue 12)",
        "",
        "Written by `tests/bench/bench_ingest.py` and `tests/bench/bench_emu2.py` (both run by `make bench`;",
        "alone: `.venv/bin/python tests/bench/bench_ingest.py --runs 3` and",
        "`.venv/bin/python tests/bench/bench_emu2.py --runs 3`). Medians of the runs, same machine, one run",
        "of each side by side. The machine is shared (2 cores, other jobs running): latencies and",
        "rates are noisy, the load average is given with each run.",
        "",
        "| figure | meter-bridge | anchor (this run) | ratio | goal | issue's anchor |",
        "|---|---|---|---|---|---|",
    ]
    rows = (_ingest_rows(ingest) if ingest else []) + (_emu2_rows(emu2) if emu2 else [])
    lines += rows or ["| (no results yet: run `make bench`) | | | | | |"]
    before_after = _before_after_rows(ingest) if ingest else []
    if before_after:
        lines += [
            "",
            f"Before/after in the same run (`bench_ingest.py --before {ingest['args']['before']}`): `before` is",
            "that executable (the previous build), `after` this checkout, interleaved with Node-RED.",
            "",
            *before_after,
        ]
    lines.append("")
    for name, data in (("ingest", ingest), ("EMU-2", emu2)):
        if data:
            runs = data.get("runs", {})
            loads = sorted({round(r.get("load1", 0), 1) for rows in runs.values() for r in rows})
            count = max((len(r) for r in runs.values()), default=0)
            lines.append(f"- {name}: {count} runs, {data.get('when', '')}, 1-min load average during the runs {loads}.")
    if ingest:
        args = ingest["args"]
        lines += [
            "- ingest: 10 Shelly PM Mini Gen3-shaped devices, `NotifyStatus` deltas on `<prefix>/events/rpc`, QoS 0,",
            "  one `mosquitto_pub -l` per device; the system under test is its own process (`meter-bridge run`,",
            "  `node red.js`) and its CPU (utime+stime) and RSS (VmRSS, VmHWM) are read from /proc; points",
            "  are counted back from VictoriaMetrics (`/api/v1/export`). Latency: `mosquitto_sub -F '%U %p'` on",
            "  `hems/meter/+` stamps each state; the `apower` in it is the message's sequence number, whose send",
            f"  time the pacer kept. Paced: {args['rate']:,.0f} msg/s for {args['seconds']:.0f} s,",
            "  `min_interval_s: 0`.",
            "  The floor row is that same paced pass with no system in between: on a loaded machine most of",
            "  the p99 is scheduling of the publishers and the subscriber, not the system.",
            "- Node-RED 4 flow: mqtt in -> function (parse NotifyStatus, power/voltage/current/energy as our",
            "  parser maps them, state per meter in context) -> join (100 or 1 s) -> `influxdb batch` (InfluxDB 2",
            "  API, VictoriaMetrics) + mqtt out of the retained state.",
        ]
    lines.append(END)
    return "\n".join(lines)


def write_report() -> None:
    """Replace (or append) the section in docs/benchmarks.md."""
    text = DOC.read_text()
    section = render()
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    write_report()
