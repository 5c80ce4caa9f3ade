"""Bytes Home Assistant's recorder writes for its nightly purge and its monthly repack (SD-card wear).

The recorder purges every night (states and 5-minute statistics older than `purge_keep_days`)
and, with `auto_repack` (HA's default), repacks on the second Sunday of the month: a SQLite
`VACUUM` on its own connection (recorder/repack.py, core.py). Neither falls in the 20-minute
window of bench_sd_writes.py, so this measures them on a database of a home after a year:

1. Builds it in HA's own schema: the release's hems_recorder_db.py (`--page-size`, 1 KB as the
   release by default; WAL; tables from the pinned HA's `db_schema`) under HA's own Python
   (tests/helpers/homeassistant.py, run_ha_python), then fills it with `--meters` meters' rows: a
   year of hourly statistics (`statistics`, `--series` series), and the last `--churn-days` days
   as the recorder writes them, day by day: states (`--states-per-hour`, round robin over the
   series' entities, with their `states_meta` and one `state_attributes` row each, context ids,
   `old_state_id` links), 5-minute statistics (`statistics_short_term`, 288 a day per series),
   `statistics_runs`, and each night a purge of what is older than `--keep-days`, as HA's purge
   does it (states unlinked from `old_state_id` and deleted by id, in batches of 4000 ids, one
   transaction). The file size and free pages after each night are printed (with
   `--vacuum-daily` a second database gets a VACUUM after each purge, to compare: does the file
   grow without it?).
2. On the finished database: the nightly purge of one day, then one VACUUM, each in a child
   process under HA's Python, on a connection with HA's pragmas (recorder/util.py,
   setup_connection_for_dialect: journal_mode=WAL, cache_size=-16384, synchronous=NORMAL,
   foreign_keys=ON), SQLite's temporary files in the database's directory (disk-backed, as the
   container's /tmp is on the card). The child reads its own /proc/self/io `write_bytes` (counted
   by the kernel when a page is dirtied in the page cache, so nothing written back later is
   missed) before and after: once after the commit (SQLite's automatic checkpoint runs in it, as
   in HA), once after closing the database (checkpoint and WAL removal) and an fsync.
   `cancelled_write_bytes` (dirty pages of files deleted before their writeback: SQLite's
   temporary file) is printed too. The same purge runs first on a copy of the database with the
   checkpoint taken apart from the commit (`wal_autocheckpoint=0` during the purge, then the
   `PRAGMA wal_checkpoint(PASSIVE)` that SQLite's automatic checkpoint runs after a commit), so
   the bytes to the WAL and the checkpoint's bytes to the database are counted apart; the two
   purges' totals should agree. `--no-vacuum` stops after the purge. With `--strace` the same
   VACUUM runs once more on a copy of the database under the system's Python and SQLite, traced
   (`strace -f -e trace=pwrite64,write`), and the bytes of its writes are summed per file, as a
   cross-check.
3. To the card (the default `--block-device`, needs root and loop devices): the database lives on
   its own ext4 file system on a loop device, made as balenaOS's data partition
   (tests/helpers/blockdev.py: 4 KB blocks), and the bytes the device was sent during each child
   step are read after a `syncfs` before and after it: data, journal and metadata, what the card
   would receive, whatever the kernel's page cache does; a temporary file deleted before its
   writeback never reaches it.

A plain script (`python tests/bench/bench_recorder_repack.py [--page-size 1024]
[--states-per-hour 600] [--no-vacuum] [--strace] [--vacuum-daily]`); needs the pinned HA
(`make setup-ha`); prints figures, asserts nothing. About a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve()
DATABASE = "home-assistant_v2.db"
#: HA's purge deletes by id in batches of its max bind variables (recorder/const.py, DEFAULT_MAX_BIND_VARS)
BATCH = 4000
HOUR = 3600.0
FIVE_MINUTES = 300.0


# ---- in the child (HA's Python in the chroot, or with --strace the system's) ----


def io_counters() -> dict[str, int]:
    """This process's /proc/self/io counters."""
    counters = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        key, value = line.split(":")
        counters[key] = int(value)
    return counters


def cache_in_small_pages(path: Path) -> None:
    """Put `path` in the page cache in 4 KB pages, as a Raspberry Pi's kernel holds it.

    Linux counts `write_bytes` per page-cache folio when it is first dirtied, the whole folio. Since
    6.16 ext4 caches regular files in large folios (readahead makes them up to hundreds of KB), so
    here one 1 KB write into a file read back by readahead counts a whole large folio (measured on
    this machine's 6.18: 200 random 1 KB writes 0.8 MB into a file cached as written, 49.7 MB once
    it was read back). Kernels before 6.16 cache ext4 files in 4 KB pages (balenaOS's for the Pi 4
    is assumed older: to check on a device). So the file is dropped from the cache (after an fsync,
    its pages are clean) and read back 4 KB at a time without readahead (POSIX_FADV_RANDOM): every
    page SQLite then dirties counts 4 KB, as with 4 KB pages."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_RANDOM)
        for offset in range(0, os.fstat(descriptor).st_size, 4096):
            os.pread(descriptor, 4096, offset)
    finally:
        os.close(descriptor)


def connect(database: Path) -> sqlite3.Connection:
    """A connection as the recorder opens it (recorder/util.py, setup_connection_for_dialect)."""
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA cache_size = -16384")
    db.execute("PRAGMA synchronous=NORMAL")  # commit_interval is not 0
    db.execute("PRAGMA foreign_keys=ON")
    return db


def columns(db: sqlite3.Connection, table: str) -> set[str]:
    """The columns HA's schema gave `table` (rows are written only into columns it has)."""
    return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}


def insert(db: sqlite3.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` (dicts of column values) into `table`; a key HA's schema lacks is an error."""
    if not rows:
        return
    keys = list(rows[0])
    missing = set(keys) - columns(db, table)
    if missing:
        raise KeyError(f"{table} has no column {sorted(missing)} in this HA's schema")
    db.executemany(
        f"INSERT INTO {table} ({', '.join(keys)}) VALUES ({', '.join('?' for _ in keys)})",  # noqa: S608 - HA's names
        [tuple(row[key] for key in keys) for row in rows],
    )


class Home:
    """The recorder's rows for `meters` meters: `series` statistics series, one entity each."""

    def __init__(self, db: sqlite3.Connection, meters: int, series: int, states_per_hour: int, seed: int) -> None:
        self.db = db
        self.random = random.Random(seed)  # noqa: S311 - plausible values, not secrets
        self.states_per_commit = max(1, round(states_per_hour * FIVE_MINUTES / HOUR))
        kinds = ["power_average", "energy_import", "energy_export"]
        self.entities = [f"sensor.hems_meter_{index % meters}_{kinds[index // meters % 3]}" for index in range(series)]
        self.is_mean = [entity.endswith("_average") for entity in self.entities]
        self.totals = [self.random.uniform(100, 20000) for _ in self.entities]
        self.last_state_id: dict[int, int] = {}
        self.next_entity = 0
        db.execute("BEGIN")
        insert(db, "states_meta", [{"entity_id": entity} for entity in self.entities])
        self.states_meta = {str(e): int(m) for m, e in db.execute("SELECT metadata_id, entity_id FROM states_meta")}
        attributes = []
        for entity, mean in zip(self.entities, self.is_mean, strict=True):
            shared = json.dumps(
                {
                    "state_class": "measurement" if mean else "total_increasing",
                    "unit_of_measurement": "W" if mean else "kWh",
                    "device_class": "power" if mean else "energy",
                    "friendly_name": entity.removeprefix("sensor.").replace("_", " ").title(),
                },
                separators=(",", ":"),
            )
            attributes.append({"hash": self.random.getrandbits(32), "shared_attrs": shared})
        insert(db, "state_attributes", attributes)
        self.attributes_id = [int(a) for (a,) in db.execute("SELECT attributes_id FROM state_attributes ORDER BY 1")]
        insert(
            db,
            "statistics_meta",
            [
                {
                    "statistic_id": entity,
                    "source": "recorder",
                    "unit_of_measurement": "W" if mean else "kWh",
                    "has_mean": mean,
                    "has_sum": not mean,
                    "name": None,
                    "mean_type": 1 if mean else 0,
                }
                for entity, mean in zip(self.entities, self.is_mean, strict=True)
            ],
        )
        self.statistics_meta = {str(s): int(m) for m, s in db.execute("SELECT id, statistic_id FROM statistics_meta")}
        db.execute("COMMIT")

    def statistics_rows(self, start: float, period: float) -> list[dict[str, Any]]:
        """One period's statistics rows, one per series (means for powers, state and sum for totals)."""
        rows = []
        for index, entity in enumerate(self.entities):
            row: dict[str, Any] = {
                "created_ts": start + period + self.random.uniform(10, 12),
                "metadata_id": self.statistics_meta[entity],
                "start_ts": start,
            }
            if self.is_mean[index]:
                mean = self.random.uniform(50, 4000)
                row |= {"mean": mean, "min": mean * 0.3, "max": mean * 1.9, "state": None, "sum": None}
            else:
                self.totals[index] += self.random.uniform(0, 0.5) * period / HOUR
                row |= {"mean": None, "min": None, "max": None, "state": self.totals[index], "sum": self.totals[index]}
            rows.append(row)
        return rows

    def hourly(self, start: float) -> None:
        insert(self.db, "statistics", self.statistics_rows(start, HOUR))

    def five_minutes(self, start: float) -> None:
        """One 5-minute commit: the states recorded in it, the statistics run and its rows."""
        end = start + FIVE_MINUTES
        for _ in range(self.states_per_commit):
            index = self.next_entity
            self.next_entity = (self.next_entity + 1) % len(self.entities)
            entity = self.entities[index]
            value = self.random.uniform(50, 4000) if self.is_mean[index] else self.totals[index]
            updated = self.random.uniform(start, end)
            cursor = self.db.execute(
                "INSERT INTO states (state, last_changed_ts, last_reported_ts, last_updated_ts, old_state_id,"
                " attributes_id, origin_idx, context_id_bin, metadata_id) VALUES (?, NULL, NULL, ?, ?, ?, 0, ?, ?)",
                (
                    f"{value:.3f}",
                    updated,
                    self.last_state_id.get(index),
                    self.attributes_id[index],
                    self.random.randbytes(16),
                    self.states_meta[entity],
                ),
            )
            self.last_state_id[index] = int(cursor.lastrowid or 0)
        insert(self.db, "statistics_runs", [{"start": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start))}])
        insert(self.db, "statistics_short_term", self.statistics_rows(start, FIVE_MINUTES))


def purge(db: sqlite3.Connection, before: float) -> dict[str, int]:
    """The nightly purge, as recorder/purge.py does it: ids of what is older than `before`, in
    batches; states unlinked from their successors' `old_state_id`, then deleted; 5-minute
    statistics and statistics runs (but the newest) deleted by id; one transaction."""
    db.execute("BEGIN")
    deleted = {"states": 0, "statistics_short_term": 0, "statistics_runs": 0}
    while ids := [
        int(i) for (i,) in db.execute("SELECT state_id FROM states WHERE last_updated_ts < ? LIMIT ?", (before, BATCH))
    ]:
        marks = ",".join("?" for _ in ids)  # only bound parameters go into the statements below
        db.execute(f"UPDATE states SET old_state_id = NULL WHERE old_state_id IN ({marks})", ids)  # noqa: S608
        deleted["states"] += db.execute(f"DELETE FROM states WHERE state_id IN ({marks})", ids).rowcount  # noqa: S608
    while ids := [
        int(i)
        for (i,) in db.execute("SELECT id FROM statistics_short_term WHERE start_ts < ? LIMIT ?", (before, BATCH))
    ]:
        marks = ",".join("?" for _ in ids)
        deleted["statistics_short_term"] += db.execute(
            f"DELETE FROM statistics_short_term WHERE id IN ({marks})",  # noqa: S608 - bound parameters
            ids,
        ).rowcount
    newest = db.execute("SELECT MAX(run_id) FROM statistics_runs").fetchone()[0]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(before))
    deleted["statistics_runs"] = db.execute(
        "DELETE FROM statistics_runs WHERE start < ? AND run_id != ?", (stamp, newest)
    ).rowcount
    db.execute("COMMIT")
    return deleted


def file_figures(db: sqlite3.Connection, database: Path) -> dict[str, int]:
    return {
        "file_bytes": database.stat().st_size,
        "page_count": int(db.execute("PRAGMA page_count").fetchone()[0]),
        "freelist_count": int(db.execute("PRAGMA freelist_count").fetchone()[0]),
        "page_size": int(db.execute("PRAGMA page_size").fetchone()[0]),
    }


def child_build(directory: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Build the year-old database in `directory` (see the docstring); stops before the last purge."""
    sys.path.insert(0, str(BENCH.parents[2] / "services" / "homeassistant"))
    import hems_recorder_db  # type: ignore[import-not-found,unused-ignore]

    made = hems_recorder_db.create(directory, options["page_size"])
    database = directory / DATABASE
    if not database.exists():  # hems_recorder_db.py left it to HA: not the database asked for
        raise SystemExit(made)
    db = connect(database)
    home = Home(db, options["meters"], options["series"], options["states_per_hour"], options["seed"])
    now = 1_796_000_400.0  # a whole hour (2026-11); the year ends here
    start = now - options["days"] * 86400
    churn_from = now - options["churn_days"] * 86400
    # the year before the churned days: hourly statistics only (its states and 5-minute rows are long purged)
    db.execute("BEGIN")
    hour = start
    while hour < churn_from:
        home.hourly(hour)
        hour += HOUR
    db.execute("COMMIT")
    nights: list[dict[str, Any]] = []
    vacuum_daily = options["vacuum_daily"]
    while hour < now:
        db.execute("BEGIN")  # one transaction an hour (the recorder's 12 commits would give the same rows)
        for step in range(12):
            home.five_minutes(hour + step * FIVE_MINUTES)
        home.hourly(hour)
        db.execute("COMMIT")
        hour += HOUR
        if (hour - start) % 86400 == 0 and hour < now:
            deleted = purge(db, hour - options["keep_days"] * 86400)
            if vacuum_daily:
                db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            nights.append({"day": len(nights) + 1, **file_figures(db, database), **deleted})
    counts = {
        table: int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608 - HA's names
        for table in ("states", "states_meta", "state_attributes", "statistics", "statistics_short_term",
                      "statistics_meta", "statistics_runs")
    }  # fmt: skip
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    figures = file_figures(db, database)
    db.close()
    return {
        "created": made,
        "nights": nights,
        "rows": counts,
        **figures,
        "purge_before": now - options["keep_days"] * 86400,
    }


def child_measure(directory: Path, what: str, before: float, secure_delete: bool) -> dict[str, Any]:
    """Write bytes of one purge or one VACUUM on the database, as the recorder runs it.

    `what` "purge-split": the purge with the checkpoint taken apart from the commit, to count the
    WAL's bytes and the checkpoint's apart (`write_bytes_to_commit` is then the WAL's alone)."""
    database = directory / DATABASE
    cache_in_small_pages(database)
    db = connect(database)
    figures: dict[str, Any] = {}
    if not secure_delete:  # Debian's and Alpine's SQLite are built with SQLITE_SECURE_DELETE (freed pages zeroed)
        db.execute("PRAGMA secure_delete=OFF")
    figures["secure_delete"] = int(db.execute("PRAGMA secure_delete").fetchone()[0])
    figures["before"] = file_figures(db, database)
    split = what == "purge-split"
    if split:
        db.execute("PRAGMA wal_autocheckpoint=0")
    start = io_counters()
    if what in ("purge", "purge-split"):
        figures["deleted"] = purge(db, before)
    else:
        db.execute("VACUUM")  # repack.py: conn.execute(text("VACUUM")); conn.commit() (autocommit here)
    committed = io_counters()
    wal = Path(f"{database}-wal")
    figures["wal_bytes_after_commit"] = wal.stat().st_size if wal.exists() else 0
    if split:  # what SQLite's automatic checkpoint does after the commit (sqlite3WalDefaultHook): PASSIVE
        busy, frames, backfilled = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        figures["checkpoint"] = {"busy": busy, "wal_frames": frames, "backfilled": backfilled}
        figures["write_bytes_to_checkpoint"] = io_counters()["write_bytes"] - committed["write_bytes"]
    figures["after"] = file_figures(db, database)
    db.close()  # the last connection: checkpoint, WAL removed
    with open(database, "rb") as handle:
        os.fsync(handle.fileno())
    closed = io_counters()
    figures["write_bytes_to_commit"] = committed["write_bytes"] - start["write_bytes"]
    figures["write_bytes_to_close"] = closed["write_bytes"] - start["write_bytes"]
    figures["cancelled_write_bytes"] = closed["cancelled_write_bytes"] - start["cancelled_write_bytes"]
    figures["file_bytes_after_close"] = database.stat().st_size
    return figures


def child(argv: list[str]) -> int:
    what, directory = argv[0], Path(argv[1])
    options = json.loads(argv[2])
    if what == "build":
        result = child_build(directory, options)
    else:
        result = child_measure(directory, what, float(options.get("before", 0)), bool(options["secure_delete"]))
    print(json.dumps(result))
    return 0


# ---- in the parent (the project's Python) ----


sys.path.insert(0, str(BENCH.parent.parent))
from helpers.blockdev import LoopUnavailableError, LoopVolume  # noqa: E402 - the tests' helpers, after the path


def in_ha(args: list[str], directory: Path) -> dict[str, Any]:
    """Run this script's child step under the pinned HA's Python; its JSON result."""
    from helpers.homeassistant import run_ha_python

    # SQLite's temporary files (VACUUM's copy) go to SQLITE_TMPDIR: the bench's disk-backed directory
    done = run_ha_python([str(BENCH), "--child", *args], {"SQLITE_TMPDIR": str(directory)}, directory, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed: {done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def traced_vacuum(copy: Path) -> dict[str, int]:
    """VACUUM the copy in `copy` under the system's Python traced by strace; bytes of pwrite64/write per file."""
    trace = copy / "strace.out"
    # the connection as `connect` opens it (HA's pragmas), from this file: one copy of them
    code = (
        f"import sys; sys.path.insert(0, {str(BENCH.parent)!r}); from bench_recorder_repack import connect;"
        " db = connect(sys.argv[1]); db.execute('VACUUM'); db.close()"
    )
    subprocess.run(
        ["strace", "-f", "-y", "-e", "trace=pwrite64,write", "-o", str(trace), sys.executable, "-c", code,
         str(copy / DATABASE)],
        check=True, env={**os.environ, "SQLITE_TMPDIR": str(copy)}, timeout=1800,
    )  # fmt: skip
    per_file: dict[str, int] = defaultdict(int)
    pattern = re.compile(r"(?:pwrite64|write)\(\d+<([^>]*)>,.*\)\s+=\s+(\d+)")
    for line in trace.read_text().splitlines():
        if match := pattern.search(line):
            name = Path(match.group(1)).name
            per_file[re.sub(r"etilqs_\w+", "etilqs_<temporary>", name)] += int(match.group(2))
    shutil.rmtree(copy)
    return dict(per_file)


def mb(value: float) -> str:
    return f"{value / 1e6:.2f} MB"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=10)
    parser.add_argument("--series", type=int, default=23, help="statistics series (one entity each)")
    parser.add_argument(
        "--page-size",
        type=int,
        default=1024,
        choices=[512 << shift for shift in range(8)],
        help="page size of the database hems_recorder_db.py creates (default 1024, as the release)",
    )
    parser.add_argument(
        "--states-per-hour", type=int, default=600, help="state rows recorded an hour (600: a 60 s step; 120: 300 s)"
    )
    parser.add_argument("--days", type=int, default=365, help="age of the database")
    parser.add_argument("--keep-days", type=int, default=10, help="the recorder's purge_keep_days")
    parser.add_argument("--churn-days", type=int, default=20, help="last days built with nightly purges")
    parser.add_argument("--vacuum-daily", action="store_true", help="also build one with a VACUUM each night")
    parser.add_argument("--strace", action="store_true", help="cross-check the VACUUM's bytes with strace")
    parser.add_argument("--no-vacuum", action="store_true", help="measure the nightly purge only")
    parser.add_argument(
        "--no-secure-delete", action="store_true", help="purge and VACUUM with PRAGMA secure_delete=OFF, to compare"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="disk-backed work directory (default: a temporary one)")
    parser.add_argument(
        "--block-device",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="work on an ext4 loop device and count the bytes it is sent (default on)",
    )
    args = parser.parse_args()
    parent_only = ("strace", "dir", "no_secure_delete", "no_vacuum", "block_device")
    options = {key: value for key, value in vars(args).items() if key not in parent_only}
    with contextlib.ExitStack() as stack:
        work = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-repack-")))
        card: LoopVolume | None = None
        if args.block_device:
            try:
                card = LoopVolume(work / "card", work / "card.img").mount()
                stack.callback(card.unmount)
                work = card.mountpoint
            except LoopUnavailableError as error:
                print(f"no block device ({error}): write_bytes only", file=sys.stderr)

        def measured(step: list[str], directory: Path) -> dict[str, Any]:
            """`in_ha`, and with a block device the bytes it was sent during the step."""
            before = card.written() if card is not None else 0
            result = in_ha(step, directory)
            if card is not None:
                result["card_bytes"] = card.written() - before
            return result

        def to_card(result: dict[str, Any]) -> str:
            return f"; to the card {result['card_bytes']:,} B" if "card_bytes" in result else ""

        directory = work / "home"
        directory.mkdir(parents=True)
        print(
            f"building: {args.meters} meters, {args.series} series, {args.states_per_hour} states/h, {args.days} days,"
            f" keep {args.keep_days} days, last {args.churn_days} days with nightly purges, {args.page_size} B pages"
        )
        built = in_ha(["build", str(directory), json.dumps({**options, "vacuum_daily": False})], directory)
        print(built["created"])
        print("rows:", ", ".join(f"{table} {count:,}" for table, count in built["rows"].items()))
        pages = f"{built['page_count']:,} pages of {built['page_size']} B, {built['freelist_count']:,} free"
        print(f"database: {mb(built['file_bytes'])} ({pages})")
        compared: list[dict[str, Any]] = []
        if args.vacuum_daily:
            other = work / "vacuumed"
            other.mkdir()
            compared = in_ha(["build", str(other), json.dumps({**options, "vacuum_daily": True})], other)["nights"]
        print("night  file without VACUUM  (free pages)" + ("  file with a VACUUM each night" if compared else ""))
        for index, night in enumerate(built["nights"]):
            line = f"{night['day']:5}  {night['file_bytes']:>18,}  ({night['freelist_count']:>6,})"
            if compared:
                line += f"  {compared[index]['file_bytes']:>18,}"
            print(line + f"   purged {night['states']:,} states, {night['statistics_short_term']:,} 5-min rows")
        secure = not args.no_secure_delete
        split_copy = work / "purge-split"
        split_copy.mkdir()
        shutil.copy(directory / DATABASE, split_copy / DATABASE)
        split = measured(
            ["purge-split", str(split_copy), json.dumps({"before": built["purge_before"], "secure_delete": secure})],
            split_copy,
        )
        shutil.rmtree(split_copy)
        wal_bytes, checkpoint_bytes = split["write_bytes_to_commit"], split["write_bytes_to_checkpoint"]
        print(
            f"nightly purge, checkpoint apart (on a copy): write_bytes {wal_bytes:,} to the WAL (its file"
            f" {split['wal_bytes_after_commit']:,} B, {split['checkpoint']['wal_frames']:,} frames),"
            f" {checkpoint_bytes:,} by the checkpoint ({split['checkpoint']['backfilled']:,} frames backfilled),"
            f" {split['write_bytes_to_close']:,} to the close: {mb(split['write_bytes_to_close'])} a night;"
            f" cancelled_write_bytes {split['cancelled_write_bytes']:,}; file {split['file_bytes_after_close']:,} B"
            + to_card(split)
        )
        purged = measured(
            ["purge", str(directory), json.dumps({"before": built["purge_before"], "secure_delete": secure})], directory
        )
        print(f"nightly purge (secure_delete {purged['secure_delete']}): deleted {purged['deleted']}")
        print(
            f"  write_bytes {purged['write_bytes_to_commit']:,} to the commit (with its automatic checkpoint),"
            f" {purged['write_bytes_to_close']:,} to the close: {mb(purged['write_bytes_to_close'])} a night;"
            f" WAL after the commit {purged['wal_bytes_after_commit']:,} B;"
            f" cancelled_write_bytes {purged['cancelled_write_bytes']:,}" + to_card(purged)
        )
        if args.no_vacuum:
            return 0
        traced_copy = work / "traced"
        if args.strace:  # the same database HA's VACUUM gets, before it
            traced_copy.mkdir()
            shutil.copy(directory / DATABASE, traced_copy / DATABASE)
        vacuum = measured(["vacuum", str(directory), json.dumps({"secure_delete": secure})], directory)
        before, after = vacuum["before"], vacuum["after"]
        print(
            f"VACUUM (secure_delete {vacuum['secure_delete']}): file {before['file_bytes']:,} B"
            f" ({before['freelist_count']:,} free pages) -> {vacuum['file_bytes_after_close']:,} B;"
            f" WAL after the commit {vacuum['wal_bytes_after_commit']:,} B"
        )
        print(
            f"  write_bytes {vacuum['write_bytes_to_commit']:,} to the commit (with its automatic checkpoint),"
            f" {vacuum['write_bytes_to_close']:,} to the close;"
            f" cancelled_write_bytes {vacuum['cancelled_write_bytes']:,}" + to_card(vacuum)
        )
        # SQLite's temporary copy is deleted when the VACUUM ends: its dirty pages are cancelled if
        # that comes before their writeback (the kernel's dirty_expire, 30 s), so a range
        low, high = vacuum["write_bytes_to_close"] - vacuum["cancelled_write_bytes"], vacuum["write_bytes_to_close"]
        size = after["page_count"] * after["page_size"]
        print(
            f"per repack {mb(low)} ({low / size:.2f}x the database) to {mb(high)} with the temporary copy;"
            f" once a month: {mb(low * 12 / 365)} to {mb(high * 12 / 365)} a day averaged"
        )
        if args.strace:
            traced = traced_vacuum(traced_copy)
            files = ", ".join(f"{name} {count:,}" for name, count in sorted(traced.items()))
            print(f"strace, system SQLite {sqlite3.sqlite_version}: {files}; total {sum(traced.values()):,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
