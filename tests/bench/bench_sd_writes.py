"""Bytes the native stack writes to storage per hour with 10 simulated meters (SD-card wear).

Runs the release's broker (the mqtt entrypoint: persistence on, its autosave interval), the
bridge (`meter-bridge run`: Home Assistant discovery/state over MQTT, InfluxDB sink with its
spool) and VictoriaMetrics as the InfluxDB write peer, all on a disk-backed directory (tmpfs
writes would not count), and reads each process's `/proc/<pid>/io` `write_bytes` (bytes it
dirtied in the page cache for a block device, i.e. what will reach the card) over `--seconds`
after a warm-up, scaled to an hour. With `--ha` (the default when `make setup-ha` has installed
it) the pinned Home Assistant runs too, seeded by hems_seed.py with the release's packages (its
recorder settings and InfluxDB filters), its MQTT integration on the same broker and its
InfluxDB integration writing to VictoriaMetrics; its figure is the whole process tree's (the
recorder is a thread of it). InfluxDB 2 itself cannot run here; its WAL fsyncs are counted as
the write requests it would receive.

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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.net import stop_process
from helpers.release import ReleaseBroker
from helpers.victoria import Victoria

HASS = Path(__file__).resolve().parents[2] / ".cache" / "ha" / "bin" / "hass"

METERS = 10
PROFILES = ("grid", "solar", "heat_pump", "ev")


def children(pid: int) -> list[int]:
    """`pid` and every process below it (the hass wrapper runs HA inside a chroot)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def tree_write_bytes(pid: int) -> int:
    """`write_bytes` summed over `pid`'s process tree (processes that vanish count 0)."""
    total = 0
    for member in children(pid):
        try:
            total += write_bytes(member)
        except (OSError, RuntimeError):
            continue
    return total


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


def start_home_assistant(workdir: Path, broker: ReleaseBroker, influx_url: str) -> Any:
    """The pinned HA with the release's packages, seeded as the image seeds it (hems_seed.py)."""
    from helpers.homeassistant import HomeAssistant
    from integration.test_ha_release_config import seed_release

    class BrokerAddress:
        """What seed_release asks of a broker."""

        host = "127.0.0.1"
        port = broker.port

        @staticmethod
        def password(user: str) -> str:
            return broker.password(user)

    ha = HomeAssistant(workdir, packages=True, extra_yaml="energy:\nhistory:\n")
    seed_release(ha.workdir, ha.port, BrokerAddress(), influx_url)  # type: ignore[arg-type]
    ha.start()
    return ha


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=330.0, help="measuring window (default 330)")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring (default 20)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between readings per meter")
    parser.add_argument(
        "--ha", action=argparse.BooleanOptionalAction, default=HASS.exists(), help="run Home Assistant too"
    )
    args = parser.parse_args()

    # under the repository (ext4 here), not /tmp, which may be a tmpfs whose writes do not count
    base = Path(__file__).resolve().parents[2] / ".bench-tmp"
    base.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="sd-writes-", dir=base))
    broker = ReleaseBroker(root / "mqtt")
    victoria = Victoria(root / "victoria")
    bridge: subprocess.Popen[bytes] | None = None
    ha = None
    try:
        broker.start()
        victoria.start()
        if args.ha:
            ha = start_home_assistant(root / "ha", broker, victoria.url)
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
        if ha is not None:
            assert ha.process is not None
            processes["Home Assistant (recorder, release packages)"] = ha.process.pid
        time.sleep(args.warmup)
        if bridge.poll() is not None:
            print((root / "bridge" / "bridge.log").read_text()[-3000:], file=sys.stderr)
            return 1
        before = {name: tree_write_bytes(pid) for name, pid in processes.items()}
        writes_before = influx_writes(victoria)
        started = time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - started
        after = {name: tree_write_bytes(pid) for name, pid in processes.items()}
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
        writers = "bridge + Home Assistant" if ha is not None else "bridge"
        print(
            f"{writers} write requests to InfluxDB: {per_hour:,.0f}/h -> WAL fsyncs/h: {per_hour:,.0f} with delay 0s,"
            f" <= {min(per_hour, 3600):,.0f} with delay 1s"
        )
        print(f"load average: {os.getloadavg()[0]:.2f}")
        return 0
    finally:
        if bridge is not None:
            stop_process(bridge)
        if ha is not None:
            ha.stop()
        victoria.stop()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
