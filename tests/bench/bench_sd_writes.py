"""Bytes the native stack writes to storage per hour, day and year with 10 simulated meters (SD-card wear).

Runs the release's broker (the mqtt entrypoint: persistence on, its autosave interval), the
bridge (`meter-bridge run`: Home Assistant live and recorded states over MQTT, InfluxDB sink with
its spool; readings every `--interval` s, HA states as often, as `make demo` sets it) and
VictoriaMetrics as the InfluxDB write peer. With `--ha` (the default when `make setup-ha` has
installed it) the pinned Home Assistant runs too, seeded by hems_seed.py with the release's
packages (its recorder settings and InfluxDB filters) and its recorder database made as the image
makes it (hems_recorder_db.py under HA's own Python: 1 KB pages; `--recorder-page-size` to
compare, 0 for HA's own 4 KB database), its MQTT integration on the same broker and its InfluxDB
integration writing to VictoriaMetrics.

Two figures per writer, over `--seconds` after a warm-up:
- **to the card** (the default `--block-devices`, needs root and loop devices): HA's config
  directory, the broker's data volume and the bridge's directory each live on their own ext4 file
  system on a loop device, made as balenaOS's data partition (tests/helpers/blockdev.py: 4 KB
  blocks), and the bytes each device was sent over the window are read after a `syncfs` at both
  ends: data, journal and metadata, what an SD card would receive.
- `write_bytes` of each process tree (`/proc/<pid>/io`: bytes dirtied in the page cache), kept to
  compare. It can be far from the card's figure either way: on a kernel that caches files in
  large folios (ext4 since 6.16; this machine's 6.18) it counts a whole folio for a small write,
  and on any kernel it leaves out ext4's journal and metadata (HA's windows here: about half of
  the card's figure).

What HA's recorder stored in the window is listed per entity. The broker's saves come once per
`autosave_interval` (an hour), usually outside the window: one save is made with SIGUSR1 after
the window and its bytes, times the saves in a day, are printed too. InfluxDB 2 itself cannot
run here; the write requests and field values it would receive are counted (docs/benchmarks.md
turns them into an estimate).

A plain script (`python tests/bench/bench_sd_writes.py [--warmup 600] [--seconds 1800]`); prints
figures, asserts nothing. The recorder commits every 5 minutes: keep `--seconds` well above that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.blockdev import LoopUnavailableError, LoopVolume
from helpers.net import stop_process
from helpers.release import ReleaseBroker
from helpers.victoria import Victoria
from meterbridge.sections import HomeAssistantConfig

HASS = Path(__file__).resolve().parents[2] / ".cache" / "ha" / "bin" / "hass"

METERS = 10
BROKER = "broker (mosquitto, release config)"
BRIDGE = "bridge (MQTT out, InfluxDB sink + spool)"
HOME_ASSISTANT = "Home Assistant (recorder, release packages)"
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


def influx_writes(victoria: Victoria) -> tuple[int, int]:
    """(write requests, field values) VictoriaMetrics received on its InfluxDB endpoints.

    A field value is what InfluxDB 2 calls a point's field: one entry in its WAL and TSM files.
    """
    with urllib.request.urlopen(f"{victoria.url}/metrics", timeout=10) as response:  # noqa: S310 - local
        text = response.read().decode()
    lines = text.splitlines()
    requests = sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in lines
        if line.startswith("vm_http_requests_total{") and 'protocol="influx"' in line
    )
    values = sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in lines
        if line.startswith("vm_rows_inserted_total{") and 'type="influx"' in line
    )
    return requests, values


def broker_save_bytes(pid: int, volume: LoopVolume | None) -> tuple[int, int | None]:
    """(`write_bytes`, bytes to its device) of one save of Mosquitto's persistence file: SIGUSR1
    makes it save at once."""
    before = write_bytes(pid)
    device_before = volume.written() if volume is not None else 0
    os.kill(pid, signal.SIGUSR1)
    time.sleep(2)
    written = write_bytes(pid) - before
    return written, (volume.written() - device_before) if volume is not None else None


def autosave_interval(broker: ReleaseBroker) -> int:
    """The rendered mosquitto.conf's `autosave_interval` (Mosquitto's default 1800 when absent)."""
    # the volumes are where ReleaseBroker makes them (not under its root)
    for conf in broker.config.rglob("mosquitto.conf"):
        for line in conf.read_text().splitlines():
            if line.startswith("autosave_interval "):
                return int(line.split()[1])
    return 1800


def per_day(written: float, seconds: float) -> str:
    """`written` bytes over `seconds` as MB/h, MB/day and GB/year."""
    day = written * 86400 / seconds
    return f"{written * 3600 / seconds / 1e6:>9.2f} {day / 1e6:>9.1f} {day * 365 / 1e9:>8.2f}"


def bridge_config(
    root: Path, broker: ReleaseBroker, influx_url: str, interval_s: float, ha_interval_s: float, recorded_s: int
) -> str:
    sources = "\n".join(
        f"  - {{type: simulated, id: meter_{n}, profile: {PROFILES[n % len(PROFILES)]}, interval_s: {interval_s},"
        f" speed: 1, seed: {n}}}"
        for n in range(METERS)
    )
    return f"""
site: {{id: bench}}
mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bridge, password: "{broker.password("bridge")}"}}
health: {{enabled: false}}
homeassistant: {{min_interval_s: {ha_interval_s}, recorded_interval_s: {recorded_s}}}
influx: {{url: "{influx_url}", org: hems, bucket: meters, token: bench-token}}
spool: {{path: "{root / "bridge" / "spool.sqlite"}"}}
totals: {{path: "{root / "bridge" / "totals.json"}"}}
sources:
{sources}
"""


def start_home_assistant(workdir: Path, broker: ReleaseBroker, influx_url: str, page_size: int) -> Any:
    """The pinned HA with the release's packages, seeded as the image seeds it (hems_seed.py, then
    hems_recorder_db.py under HA's own Python: the recorder database with `page_size` pages; 0:
    none, HA creates it with SQLite's default)."""
    from helpers.homeassistant import REPO, HomeAssistant, run_ha_python
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
    if page_size:
        script = REPO / "services" / "homeassistant" / "hems_recorder_db.py"
        made = run_ha_python(
            [str(script), "--page-size", str(page_size)], {"HA_CONFIG_DIR": str(ha.workdir)}, ha.workdir
        )
        print(made.stderr.strip(), file=sys.stderr)
        assert made.returncode == 0
    ha.start()
    return ha


def report_home_assistant(ha: Any, since: float) -> None:
    """What HA's recorder stored in the window, per entity (most rows first), and its files' sizes.

    Asks the recorder to commit first (after the bytes were read): `recorder.purge` is one of the
    recorder's tasks, each of which commits what it holds before it runs (recorder/tasks.py).
    """
    asyncio.run(ha.rest("POST", "/api/services/recorder/purge", {}))
    time.sleep(5)
    config = ha.workdir
    database = config / "home-assistant_v2.db"
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
        rows = db.execute(
            "SELECT m.entity_id, COUNT(*) FROM states s JOIN states_meta m ON s.metadata_id = m.metadata_id"
            " WHERE s.last_updated_ts >= ? GROUP BY m.entity_id ORDER BY COUNT(*) DESC",
            (since,),
        ).fetchall()
        # a 5-minute row's start is the period's, 5 minutes before it was compiled
        short_term = db.execute(
            "SELECT COUNT(*) FROM statistics_short_term WHERE start_ts >= ?", (since - 300,)
        ).fetchone()
        events = db.execute(
            "SELECT t.event_type, COUNT(*) FROM events e JOIN event_types t ON e.event_type_id = t.event_type_id"
            " WHERE e.time_fired_ts >= ? GROUP BY t.event_type",
            (since,),
        ).fetchall()
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        schema = db.execute("SELECT schema_version FROM schema_changes ORDER BY change_id").fetchall()
    moved_aside = sorted(path.name for path in config.glob("home-assistant_v2.db*.corrupt*"))
    print(f"HA recorder database: page size {page_size}, schema versions {schema}, moved aside: {moved_aside}")
    total = sum(count for _, count in rows)
    print(f"HA recorder: {total:,} state rows in the window, {len(rows)} entities; most rows:")
    for entity_id, count in rows[:12]:
        print(f"  {entity_id:<50} {count:>7,}")
    print(f"HA recorder: {short_term[0]:,} 5-minute statistics rows in the window; events: {events}")
    files = sorted(
        (path for path in config.rglob("*") if path.is_file() and path.stat().st_size > 0),
        key=lambda path: -path.stat().st_size,
    )
    print("HA's largest files: " + ", ".join(f"{p.relative_to(config)} {p.stat().st_size:,}" for p in files[:8]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1800.0, help="measuring window (default 1800)")
    parser.add_argument("--warmup", type=float, default=600.0, help="seconds before measuring (default 600)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between readings per meter (default 2)")
    parser.add_argument(
        "--ha-interval",
        type=float,
        default=None,
        help="the HA sink's min_interval_s (default: --interval, as make demo sets it)",
    )
    parser.add_argument(
        "--recorded-interval",
        type=int,
        default=HomeAssistantConfig().recorded_interval_s,
        help="the HA sink's recorded_interval_s (default: the release's, %(default)s)",
    )
    parser.add_argument(
        "--recorder-page-size",
        type=int,
        default=1024,
        help="page size of the recorder database hems_recorder_db.py creates (default 1024, as the release;"
        " 0: HA creates it, 4096 bytes)",
    )
    parser.add_argument(
        "--ha", action=argparse.BooleanOptionalAction, default=HASS.exists(), help="run Home Assistant too"
    )
    parser.add_argument(
        "--block-devices",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="put each writer's directory on its own ext4 loop device and count what it was sent (default on)",
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
    #: each writer's directory on its own block device, by the writer's name below
    volumes: dict[str, LoopVolume] = {}
    try:
        if args.block_devices:
            places = {BROKER: broker.data, BRIDGE: root / "bridge"}
            if args.ha:
                places[HOME_ASSISTANT] = root / "ha"
            try:
                for name, place in places.items():
                    volumes[name] = LoopVolume(place, base / f"{root.name}-{place.name}.img").mount()
            except LoopUnavailableError as error:
                print(f"no block devices ({error}): write_bytes only", file=sys.stderr)
        broker.start()
        victoria.start()
        if args.ha:
            ha = start_home_assistant(root / "ha", broker, victoria.url, args.recorder_page_size)
        (root / "bridge").mkdir(exist_ok=True)
        config = root / "bridge" / "config.yaml"
        config.write_text(
            bridge_config(
                root,
                broker,
                victoria.url,
                args.interval,
                args.interval if args.ha_interval is None else args.ha_interval,
                args.recorded_interval,
            )
        )
        log = (root / "bridge" / "bridge.log").open("wb")
        bridge = subprocess.Popen(
            [sys.executable, "-m", "meterbridge.cli", "run", "--config", str(config)], stdout=log, stderr=log
        )
        assert broker.process is not None
        assert victoria.process is not None
        processes = {
            BROKER: broker.process.pid,
            BRIDGE: bridge.pid,
            "VictoriaMetrics (InfluxDB stand-in, not InfluxDB's figure)": victoria.process.pid,
        }
        if ha is not None:
            assert ha.process is not None
            processes[HOME_ASSISTANT] = ha.process.pid
        time.sleep(args.warmup)
        if bridge.poll() is not None:
            print((root / "bridge" / "bridge.log").read_text()[-3000:], file=sys.stderr)
            return 1
        device_before = {name: volume.written() for name, volume in volumes.items()}
        before = {name: tree_write_bytes(pid) for name, pid in processes.items()}
        requests_before, values_before = influx_writes(victoria)
        started = time.monotonic()
        window_start = time.time()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - started
        after = {name: tree_write_bytes(pid) for name, pid in processes.items()}
        device_after = {name: volume.written() for name, volume in volumes.items()}
        requests_after, values_after = influx_writes(victoria)
        writes, values = requests_after - requests_before, values_after - values_before
        spool = root / "bridge" / "spool.sqlite"
        spooled = sum(p.stat().st_size for p in spool.parent.glob("spool.sqlite*"))
        readings_per_hour = METERS * 3600 / args.interval
        print(
            f"{METERS} simulated meters, a reading every {args.interval:g} s each "
            f"({readings_per_hour:,.0f} readings/h); window {elapsed:.0f} s after {args.warmup:g} s warm-up"
        )
        header = f"{'bytes in window':>16} {'MB/h':>9} {'MB/day':>9} {'GB/year':>8}"
        if volumes:
            print("to the card (bytes its block device was sent, data + journal + metadata, after syncfs):")
            print(f"{'writer':<60} {header}")
            for name in volumes:
                written = device_after[name] - device_before[name]
                print(f"{name:<60} {written:>16,} {per_day(written, elapsed)}")
            print("write_bytes of each process tree (page-cache folios dirtied; compare only):")
        print(f"{'process':<60} {header}")
        for name in processes:
            written = after[name] - before[name]
            print(f"{name:<60} {written:>16,} {per_day(written, elapsed)}")
        # the broker's saves come every autosave_interval, which may be longer than the window:
        # what one save writes, times the saves in a day
        save, save_device = broker_save_bytes(broker.process.pid, volumes.get(BROKER))
        interval = autosave_interval(broker)
        label = f"broker, one save per autosave_interval {interval} s"
        print(f"{label + ', write_bytes':<60} {save:>16,} {per_day(save, interval)}")
        if save_device is not None:
            print(f"{label + ', to the card':<60} {save_device:>16,} {per_day(save_device, interval)}")
        print(f"spool files on disk: {spooled:,} bytes")
        # InfluxDB 2.7 fsyncs its WAL once per write request with storage-wal-fsync-delay 0s; with
        # a delay of 1 s, once per second that has writes at most
        per_hour = writes * 3600 / elapsed
        writers = "bridge + Home Assistant" if ha is not None else "bridge"
        print(
            f"{writers} write requests to InfluxDB: {per_hour:,.0f}/h -> WAL fsyncs/h: {per_hour:,.0f} with delay 0s,"
            f" <= {min(per_hour, 3600):,.0f} with delay 1s"
        )
        print(f"{writers} field values written to InfluxDB: {values * 86400 / elapsed:,.0f}/day")
        mosquitto_db = sum(f.stat().st_size for f in broker.data.rglob("mosquitto.db"))
        print(f"broker persistence file (the retained set, rewritten whole at each save): {mosquitto_db:,} bytes")
        if ha is not None:
            report_home_assistant(ha, window_start)
        print(f"load average: {os.getloadavg()[0]:.2f}")
        return 0
    finally:
        if bridge is not None:
            stop_process(bridge)
        if ha is not None:
            ha.stop()
        victoria.stop()
        broker.stop()
        for volume in volumes.values():
            volume.unmount()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
