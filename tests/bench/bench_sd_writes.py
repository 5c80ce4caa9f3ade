"""Bytes the native stack writes to storage per hour with 10 simulated meters (SD-card wear).

Runs the release's broker (the mqtt entrypoint: persistence on, its autosave interval), the
bridge (`meter-bridge run`: Home Assistant discovery/state over MQTT, InfluxDB sink with its
spool) and VictoriaMetrics as the InfluxDB write peer, all on a disk-backed directory (tmpfs
writes would not count), and reads each process's `/proc/<pid>/io` `write_bytes` (bytes it
dirtied in the page cache for a block device, i.e. what will reach the card) over `--seconds`
after a warm-up, scaled to an hour. Home Assistant (recorder) and InfluxDB 2 itself do not run
here: see docs/benchmarks.md for what they add.

A plain script (`python tests/bench/bench_sd_writes.py [--seconds 330]`); prints figures,
asserts nothing. Keep `--seconds` above the broker's autosave interval (300 s) so that a save
falls in the window.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.net import stop_process
from helpers.release import ReleaseBroker
from helpers.victoria import Victoria

METERS = 10
PROFILES = ("grid", "solar", "heat_pump", "ev")


def write_bytes(pid: int) -> int:
    """`write_bytes` of `pid` (and of nothing else: threads are included, children are not)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes for {pid}")


def influx_writes(victoria: Victoria) -> int:
    """Write requests VictoriaMetrics received on its InfluxDB endpoints (/api/v2/write among them)."""
    with urllib.request.urlopen(f"{victoria.url}/metrics", timeout=10) as response:  # noqa: S310 - local
        text = response.read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("vm_http_requests_total{") and 'protocol="influx"' in line
    )


def bridge_config(root: Path, broker: ReleaseBroker, influx_url: str, interval_s: float) -> str:
    sources = "\n".join(
        f"  - {{type: simulated, id: meter_{n}, profile: {PROFILES[n % len(PROFILES)]}, interval_s: {interval_s},"
        f" speed: 1, seed: {n}}}"
        for n in range(METERS)
    )
    return f"""
site: {{id: bench}}
mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bridge, password: "{broker.password("bridge")}"}}
health: {{enabled: false}}
influx: {{url: "{influx_url}", org: hems, bucket: meters, token: bench-token}}
spool: {{path: "{root / "bridge" / "spool.sqlite"}"}}
sources:
{sources}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=330.0, help="measuring window (default 330)")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring (default 20)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between readings per meter")
    args = parser.parse_args()

    # under the repository (ext4 here), not /tmp, which may be a tmpfs whose writes do not count
    base = Path(__file__).resolve().parents[2] / ".bench-tmp"
    base.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="sd-writes-", dir=base))
    broker = ReleaseBroker(root / "mqtt")
    victoria = Victoria(root / "victoria")
    bridge: subprocess.Popen[bytes] | None = None
    try:
        broker.start()
        victoria.start()
        (root / "bridge").mkdir()
        config = root / "bridge" / "config.yaml"
        config.write_text(bridge_config(root, broker, victoria.url, args.interval))
        log = (root / "bridge" / "bridge.log").open("wb")
        bridge = subprocess.Popen(
            [sys.executable, "-m", "meterbridge.cli", "run", "--config", str(config)], stdout=log, stderr=log
        )
        assert broker.process is not None
        assert victoria.process is not None
        processes = {
            "broker (mosquitto, release config)": broker.process.pid,
            "bridge (MQTT out, InfluxDB sink + spool)": bridge.pid,
            "VictoriaMetrics (InfluxDB stand-in, not InfluxDB's figure)": victoria.process.pid,
        }
        time.sleep(args.warmup)
        if bridge.poll() is not None:
            print((root / "bridge" / "bridge.log").read_text()[-3000:], file=sys.stderr)
            return 1
        before = {name: write_bytes(pid) for name, pid in processes.items()}
        writes_before = influx_writes(victoria)
        started = time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - started
        after = {name: write_bytes(pid) for name, pid in processes.items()}
        writes = influx_writes(victoria) - writes_before
        spool = root / "bridge" / "spool.sqlite"
        spooled = sum(p.stat().st_size for p in spool.parent.glob("spool.sqlite*"))
        readings_per_hour = METERS * 3600 / args.interval
        print(
            f"{METERS} simulated meters, a reading every {args.interval:g} s each "
            f"({readings_per_hour:,.0f} readings/h); window {elapsed:.0f} s after {args.warmup:g} s warm-up"
        )
        print(f"{'process':<60} {'bytes in window':>16} {'per hour':>12}")
        for name in processes:
            written = after[name] - before[name]
            print(f"{name:<60} {written:>16,} {written * 3600 / elapsed / 1e6:>9.2f} MB")
        print(f"spool files on disk: {spooled:,} bytes")
        # InfluxDB 2.7 fsyncs its WAL once per write request with storage-wal-fsync-delay 0s; with
        # a delay of 1 s, once per second that has writes at most
        per_hour = writes * 3600 / elapsed
        print(
            f"bridge write requests to InfluxDB: {per_hour:,.0f}/h -> WAL fsyncs/h: {per_hour:,.0f} with delay 0s,"
            f" <= {min(per_hour, 3600):,.0f} with delay 1s"
        )
        print(f"load average: {os.getloadavg()[0]:.2f}")
        return 0
    finally:
        if bridge is not None:
            stop_process(bridge)
        victoria.stop()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
