"""EMU-2 parser benchmark: ours vs aioraven's, same 1,000,000-fragment stream in 64-byte chunks.

Prints fragments per second and resident memory after 10k, 100k and 1M fragments for
each parser. Each parser runs in its own subprocess so that its memory is measured
alone. aioraven (what Home Assistant's rainforest_raven integration uses) is installed
into the running venv by this script if it is missing; it is never a test dependency.

    .venv/bin/python tests/bench/bench_emu2.py [--fragments 1000000] [--runs 3] [--no-report]

With several runs (each parser once per run, alternating) the medians go to
`.cache/bench/emu2.json` and `report.py` puts them in docs/benchmarks.md (unless
`--no-report`: measuring on a busy machine must not overwrite the published figures).

aioraven's parser is driven as aioraven drives it: its `RAVEnReaderProtocol` fed the
bytes, its `RAVEnReader` receiving the elements (no queries waiting). Ours turns every
fragment into typed readings and events; aioraven's stops at dicts of strings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import RESULTS, write_report

AIORAVEN = "aioraven==0.7.1"
CHUNK = 64
CHECKPOINTS = (10_000, 100_000, 1_000_000)
_DEVICE = "0xd8d5b9000000054e"
_METER = "0x00078100011a4c66"


def _fragment(root: str, fields: list[tuple[str, str]]) -> bytes:
    body = "".join(f"  <{name}>{value}</{name}>\r\n" for name, value in fields)
    return f"<{root}>\r\n{body}</{root}>\r\n".encode()


def block(size: int = 1000) -> tuple[bytes, int]:
    """`size` fragments as the device pushes them: 8 demand, 1 summation, 1 connection status in 10."""
    parts = []
    for i in range(size):
        ts = f"0x{0x25117E9F + i:08x}"
        head = [("DeviceMacId", _DEVICE), ("MeterMacId", _METER), ("TimeStamp", ts)]
        if i % 10 == 8:
            fields = [
                *head,
                ("SummationDelivered", f"0x{9_885_394 + i:016x}"),
                ("SummationReceived", f"0x{i:016x}"),
                ("Multiplier", "0x00000001"),
                ("Divisor", "0x000003e8"),
                ("DigitsRight", "0x03"),
                ("DigitsLeft", "0x0f"),
                ("SuppressLeadingZero", "Y"),
            ]
            parts.append(_fragment("CurrentSummationDelivered", fields))
        elif i % 10 == 9:
            fields = [
                ("DeviceMacId", _DEVICE),
                ("MeterMacId", _METER),
                ("Status", "Connected"),
                ("Description", "Successfully Joined"),
                ("ExtPanId", "0x000781000086d0fe"),
                ("Channel", "20"),
                ("ShortAddr", "0xe1aa"),
                ("LinkStrength", "0x64"),
            ]
            parts.append(_fragment("ConnectionStatus", fields))
        else:
            demand = (i * 37) % 6000 - 1500  # some export: negative, written as signed 32-bit
            fields = [
                *head,
                ("Demand", f"0x{demand & 0xFFFFFFFF:08x}"),
                ("Multiplier", "0x00000001"),
                ("Divisor", "0x000003e8"),
                ("DigitsRight", "0x03"),
                ("DigitsLeft", "0x06"),
                ("SuppressLeadingZero", "Y"),
            ]
            parts.append(_fragment("InstantaneousDemand", fields))
    return b"".join(parts), size


def chunks(total: int) -> Iterator[bytes]:
    """The stream of `total` fragments in 64-byte chunks, generated on the fly (constant memory)."""
    data, per_block = block()
    carry = b""
    for _ in range(total // per_block):
        buf = carry + data
        cut = len(buf) - len(buf) % CHUNK
        for pos in range(0, cut, CHUNK):
            yield buf[pos : pos + CHUNK]
        carry = buf[cut:]
    if carry:
        yield carry


def rss_mib() -> float:
    """Current resident set size (MiB)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def ours() -> tuple[Callable[[bytes], None], Callable[[], int]]:
    from meterbridge.sources.emu2.parser import Emu2Parser

    parser = Emu2Parser("grid")
    return parser.feed, lambda: parser.fragments


def theirs() -> tuple[Callable[[bytes], None], Callable[[], int]]:
    import asyncio

    from aioraven.protocols import RAVEnReaderProtocol
    from aioraven.reader import RAVEnReader

    roots = {"InstantaneousDemand", "CurrentSummationDelivered", "ConnectionStatus"}
    reader = RAVEnReader(asyncio.new_event_loop())
    count = [0]
    feed_element = reader.feed_element

    def counting(element: object) -> None:
        if getattr(element, "tag", None) in roots:
            count[0] += 1
        feed_element(element)  # type: ignore[arg-type]

    reader.feed_element = counting  # type: ignore[method-assign]
    protocol = RAVEnReaderProtocol(reader)
    protocol.connection_made(None)
    return protocol.data_received, lambda: count[0]


def worker(which: str, total: int) -> None:
    feed, fragments = (ours if which == "ours" else theirs)()
    base = rss_mib()
    marks = [c for c in CHECKPOINTS if c <= total] or [total]
    results = []
    started = time.perf_counter()
    for chunk in chunks(total):
        feed(chunk)
        if fragments() >= marks[0]:
            elapsed = time.perf_counter() - started
            results.append({"fragments": fragments(), "seconds": elapsed, "rss_mib": rss_mib()})
            marks.pop(0)
            if not marks:
                break
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"parser": which, "base_rss_mib": base, "peak_rss_mib": peak, "marks": results}))


def ensure_aioraven() -> bool:
    if importlib.util.find_spec("aioraven") is not None:
        return True
    print(f"installing {AIORAVEN} into this venv for the comparison...", file=sys.stderr)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", AIORAVEN], check=False)
    importlib.invalidate_caches()
    return done.returncode == 0


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--fragments", type=int, default=1_000_000)
    args.add_argument("--worker", choices=["ours", "aioraven"])
    args.add_argument("--runs", type=int, default=3)
    args.add_argument("--report", action="store_true", help="write docs/benchmarks.md even for one run")
    args.add_argument("--no-report", action="store_true", help="do not rewrite docs/benchmarks.md")
    opts = args.parse_args()
    if opts.worker:
        worker(opts.worker, opts.fragments)
        return 0
    parsers = ["ours"] + (["aioraven"] if ensure_aioraven() else [])
    if len(parsers) == 1:
        print("aioraven could not be installed: ours only", file=sys.stderr)
    runs: dict[str, list[dict[str, Any]]] = {which: [] for which in parsers}
    for _ in range(opts.runs):
        for which in parsers:
            load = os.getloadavg()[0]
            out = subprocess.run(
                [sys.executable, __file__, "--worker", which, "--fragments", str(opts.fragments)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            row = json.loads(out.strip().splitlines()[-1])
            row["load1"] = load
            runs[which].append(row)
    print(f"EMU-2 parser: {opts.fragments:,} fragments in {CHUNK}-byte chunks, median of {opts.runs} run(s)")
    print(f"{'parser':10} {'fragments':>10} {'frag/s':>10} {'RSS MiB':>8} {'(start)':>8}")
    median: dict[str, Any] = {}
    for which, rows in runs.items():
        marks: dict[str, dict[str, float]] = {}
        for i, mark in enumerate(rows[0]["marks"]):
            rates = [r["marks"][i]["fragments"] / r["marks"][i]["seconds"] for r in rows]
            rss = [r["marks"][i]["rss_mib"] for r in rows]
            marks[str(mark["fragments"])] = {"rate": statistics.median(rates), "rss_mib": statistics.median(rss)}
        base = statistics.median(r["base_rss_mib"] for r in rows)
        peak = statistics.median(r["peak_rss_mib"] for r in rows)
        median[which] = {"marks": marks, "base_rss_mib": base, "peak_rss_mib": peak}
        for count, mark in marks.items():
            print(f"{which:10} {int(count):>10,} {mark['rate']:>10,.0f} {mark['rss_mib']:>8.1f} {base:>8.1f}")
        print(f"{which:10} peak RSS {peak:.1f} MiB")
    if len(median) == 2:
        last = {w: m["marks"][max(m["marks"], key=int)]["rate"] for w, m in median.items()}
        print(f"throughput ratio ours/aioraven: {last['ours'] / last['aioraven']:.2f}x")
    if opts.runs > 1 or opts.report:
        RESULTS.mkdir(parents=True, exist_ok=True)
        when = time.strftime("%Y-%m-%d %H:%M")
        result = {"when": when, "fragments": opts.fragments, "runs": runs, "median": median}
        (RESULTS / "emu2.json").write_text(json.dumps(result, indent=1))
        if not opts.no_report:
            write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
