"""The durable spool: lines InfluxDB has not acknowledged, in SQLite (WAL), oldest first.

Why it looks like this (SD-card wear and `kill -9`):

- Rows are *chunks* of up to `chunk_lines` lines, zlib-compressed (line protocol
  shrinks ~5-10x), written in one transaction per `append`: one commit per second
  at most from the sink, never one per reading.
- `journal_mode=WAL` + `synchronous=NORMAL`: a committed transaction survives the
  process being killed (it is in the WAL file, in the OS page cache); only a power cut
  before the next checkpoint can lose the last commits. No fsync per commit, so the
  card sees a few pages per second, not a flush per reading.
- Bounded by `max_bytes` of compressed payload: when an append goes over, the oldest
  rows are deleted in the same transaction, and the lines and readings dropped are
  counted (`dropped_readings`). The file itself stays near `max_bytes` plus SQLite's
  page overhead plus a WAL capped at 4 MiB (`journal_size_limit`).
- Rejected batches (InfluxDB answered a non-retryable 4xx) move to the `quarantine`
  table with the reason: kept for people to look at, never retried, bounded by
  `quarantine_max_bytes` (oldest dropped).

Not thread-safe: one event loop owns it. Raises `SinkError` when the file cannot be
opened or written (names the path).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import SinkError
from .lineprotocol import Line

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY,
    payload BLOB NOT NULL,
    lines INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    payload BLOB NOT NULL,
    lines INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    created REAL NOT NULL,
    quarantined REAL NOT NULL,
    reason TEXT NOT NULL
);
"""

#: The WAL file is truncated back to this after a checkpoint.
WAL_LIMIT_BYTES = 4 * 1024 * 1024
_ZLIB_LEVEL = 6


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """The oldest rows of the spool, ready to send: `payload` is newline-separated lines."""

    row_ids: tuple[int, ...]
    payload: bytes
    lines: int
    readings: int


@dataclass(frozen=True, slots=True)
class QuarantinedBatch:
    """A batch InfluxDB refused, with its reason."""

    id: int
    lines: int
    readings: int
    quarantined: float
    reason: str
    payload: bytes


class Spool:
    """The on-disk FIFO of unacknowledged lines; see the module docstring."""

    def __init__(self, path: Path, max_bytes: int, quarantine_max_bytes: int = 16 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.quarantine_max_bytes = quarantine_max_bytes
        #: Readings and lines deleted because the spool was full (since this process started).
        self.dropped_readings = 0
        self.dropped_lines = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            self._db.executescript(_SCHEMA)
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(payload)), 0), COALESCE(SUM(lines), 0), "
                "COALESCE(SUM(readings), 0) FROM spool"
            ).fetchone()
            qrow = self._db.execute("SELECT COALESCE(SUM(length(payload)), 0) FROM quarantine").fetchone()
        except sqlite3.Error as err:
            raise SinkError(f"cannot open spool {path}: {err}") from err
        self.rows, self.bytes, self.lines, self.readings = (int(v) for v in row)
        self.quarantine_bytes = int(qrow[0])

    # -- writing ---------------------------------------------------------------------

    def append(self, lines: Sequence[Line], chunk_lines: int = 5000) -> list[int]:
        """Store `lines` (in order) in one transaction; returns the new row ids.

        Drops the oldest rows when the spool goes over `max_bytes` (they are counted).
        """
        if not lines:
            return []
        rows = []
        now = time.time()
        for start in range(0, len(lines), chunk_lines):
            chunk = lines[start : start + chunk_lines]
            payload = zlib.compress("\n".join(line.text for line in chunk).encode(), _ZLIB_LEVEL)
            rows.append((payload, len(chunk), sum(line.readings for line in chunk), now))
        ids: list[int] = []
        try:
            self._db.execute("BEGIN")
            for payload, n_lines, n_readings, created in rows:
                cursor = self._db.execute(
                    "INSERT INTO spool (payload, lines, readings, created) VALUES (?, ?, ?, ?)",
                    (payload, n_lines, n_readings, created),
                )
                ids.append(int(cursor.lastrowid or 0))
                self.rows += 1
                self.bytes += len(payload)
                self.lines += n_lines
                self.readings += n_readings
            last_dropped = self._enforce_limit()
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            raise SinkError(f"cannot write spool {self.path}: {err}") from err
        # a single append larger than the whole spool drops some of its own rows
        return [row_id for row_id in ids if row_id > last_dropped]

    def _enforce_limit(self) -> int:
        """Delete the oldest rows until under `max_bytes`; returns the newest id deleted (0: none)."""
        if self.bytes <= self.max_bytes:
            return 0
        cursor = self._db.execute("SELECT id, length(payload), lines, readings FROM spool ORDER BY id")
        doomed: list[int] = []
        for row_id, size, n_lines, n_readings in cursor.fetchall():
            if self.bytes <= self.max_bytes:
                break
            doomed.append(row_id)
            self.rows -= 1
            self.bytes -= size
            self.lines -= n_lines
            self.readings -= n_readings
            self.dropped_lines += n_lines
            self.dropped_readings += n_readings
        self._db.executemany("DELETE FROM spool WHERE id = ?", [(row_id,) for row_id in doomed])
        return doomed[-1] if doomed else 0

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction open: nothing to undo
            self._db.execute("ROLLBACK")
        self._recount()

    def _recount(self) -> None:
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(payload)), 0), COALESCE(SUM(lines), 0), "
            "COALESCE(SUM(readings), 0) FROM spool"
        ).fetchone()
        self.rows, self.bytes, self.lines, self.readings = (int(v) for v in row)

    # -- reading and acknowledging -------------------------------------------------------

    def head(self, max_lines: int) -> SpoolBatch | None:
        """The oldest rows holding at most `max_lines` lines (at least one row); None when empty."""
        if not self.rows:
            return None
        try:
            cursor = self._db.execute("SELECT id, payload, lines, readings FROM spool ORDER BY id LIMIT 64")
            ids: list[int] = []
            parts: list[bytes] = []
            lines = readings = 0
            for row_id, payload, n_lines, n_readings in cursor:
                if ids and lines + n_lines > max_lines:
                    break
                ids.append(row_id)
                parts.append(zlib.decompress(payload))
                lines += n_lines
                readings += n_readings
        except (sqlite3.Error, zlib.error) as err:
            raise SinkError(f"cannot read spool {self.path}: {err}") from err
        if not ids:
            return None
        return SpoolBatch(tuple(ids), b"\n".join(parts), lines, readings)

    def delete(self, row_ids: Sequence[int]) -> None:
        """Forget rows InfluxDB acknowledged (one transaction)."""
        if not row_ids:
            return
        try:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM spool WHERE id = ?", [(row_id,) for row_id in row_ids])
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            raise SinkError(f"cannot write spool {self.path}: {err}") from err
        self._recount()

    def quarantine(self, row_ids: Sequence[int], reason: str) -> None:
        """Move rows InfluxDB refused to the quarantine table with `reason` (never retried)."""
        if not row_ids:
            return
        marks = ",".join("?" * len(row_ids))  # placeholders only: no value is formatted into SQL
        try:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO quarantine (payload, lines, readings, created, quarantined, reason) "  # noqa: S608
                f"SELECT payload, lines, readings, created, ?, ? FROM spool WHERE id IN ({marks}) ORDER BY id",
                (time.time(), reason[:1000], *row_ids),
            )
            self._db.execute(f"DELETE FROM spool WHERE id IN ({marks})", tuple(row_ids))  # noqa: S608
            total = int(self._db.execute("SELECT COALESCE(SUM(length(payload)), 0) FROM quarantine").fetchone()[0])
            for qid, size in self._db.execute("SELECT id, length(payload) FROM quarantine ORDER BY id").fetchall():
                if total <= self.quarantine_max_bytes:
                    break
                self._db.execute("DELETE FROM quarantine WHERE id = ?", (qid,))
                total -= size
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            raise SinkError(f"cannot write spool {self.path}: {err}") from err
        self.quarantine_bytes = total
        self._recount()

    def quarantined(self) -> list[QuarantinedBatch]:
        """Every quarantined batch, oldest first (payload decompressed)."""
        rows = self._db.execute(
            "SELECT id, lines, readings, quarantined, reason, payload FROM quarantine ORDER BY id"
        ).fetchall()
        return [QuarantinedBatch(r[0], r[1], r[2], r[3], r[4], zlib.decompress(r[5])) for r in rows]

    def close(self) -> None:
        """Checkpoint the WAL and close the file."""
        with contextlib.suppress(sqlite3.Error):  # closing anyway; the WAL is replayed on the next open
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
