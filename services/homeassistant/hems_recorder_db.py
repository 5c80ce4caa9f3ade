"""Create Home Assistant's recorder database with small SQLite pages before HA's first start.

Why: the recorder commits its 5-minute statistics in WAL mode, and SQLite writes every page a
commit touches to the WAL and again at the checkpoint, whole. HA never sets `page_size`, so its
database gets SQLite's default (4 KB), and a database in WAL mode keeps the page size it was
created with for good (VACUUM cannot change it while in WAL mode; HA's repack keeps it). A
statistics commit touches a few dozen pages of a few rows each: with smaller pages it writes a
fraction of the bytes (docs/benchmarks.md, "Write budget").

How: only when there is no database yet (first boot; an existing database is never touched).
Home Assistant moves an existing SQLite file aside as corrupt when its tables are missing
(recorder/util.py, validate_or_move_away_sqlite_database), so an empty file will not do: the
tables are created here from HA's own schema (`recorder.db_schema.Base`, the same
`metadata.create_all` the recorder runs on a new database, then finds its tables there, adds its
schema version and runs as on any new install). Built next to the target and renamed into place,
so a power cut leaves either no database (HA then makes its own) or a whole one.

Runs under the Home Assistant image's Python (it imports homeassistant and SQLAlchemy); when they
are not importable the database is left to HA (a line in the log says so). Settings
(environment): HA_CONFIG_DIR (default /config).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

#: bytes per page: 1 KB pages made the recorder write the least (docs/benchmarks.md)
PAGE_SIZE = 1024
#: the file Home Assistant's recorder uses by default (recorder `db_url` unset)
DATABASE = "home-assistant_v2.db"


def log(message: str) -> None:
    """One line on stderr (the container log)."""
    print(f"homeassistant-recorder-db: {message}", file=sys.stderr)


def page_size(path: Path) -> int:
    """The page size of an SQLite database file."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("PRAGMA page_size").fetchone()[0])


def remove_partial(path: Path) -> None:
    """A half-built database from an interrupted run (and its WAL and index)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def create(config: Path, size: int = PAGE_SIZE) -> str:
    """Create the recorder database with pages of `size` bytes unless one exists; what was done."""
    database = config / DATABASE
    # a WAL without its database would be a database HA had and lost: leave that to HA
    if any(Path(f"{database}{suffix}").exists() for suffix in ("", "-wal")):
        return f"{database} exists: kept as it is (page size {page_size(database) if database.exists() else '?'})"
    try:
        from homeassistant.components.recorder.db_schema import Base
        from sqlalchemy import create_engine, event
    except ImportError as err:
        return f"Home Assistant's recorder schema is not importable ({err}): HA creates the database"
    building = config / f"{DATABASE}.hems-new"
    remove_partial(building)

    def before_anything(dbapi_connection: Any, _record: Any) -> None:
        # page_size counts only before the first table exists; journal_mode=WAL as HA sets it
        old_isolation = dbapi_connection.isolation_level
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA page_size={int(size)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()
        dbapi_connection.isolation_level = old_isolation

    engine = create_engine(f"sqlite:///{building}", future=True)
    event.listen(engine, "connect", before_anything)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()  # the last connection closes: the WAL is checkpointed into the file
    made = page_size(building)
    if made != size:
        remove_partial(building)
        return f"SQLite made pages of {made} bytes, not {size}: HA creates the database"
    with open(building, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(building, database)
    directory = os.open(config, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return f"{database} created with HA's schema, page size {made}"


def main(argv: list[str] | None = None) -> int:
    """Create the database if there is none; never fails HA's start (exit 0 on any error)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page-size", type=int, default=PAGE_SIZE, help=f"bytes per page (default {PAGE_SIZE})")
    args = parser.parse_args(argv)
    config = Path(os.environ.get("HA_CONFIG_DIR", "/config"))
    try:
        log(create(config, args.page_size))
    except Exception as err:  # HA makes its own database; the log says why
        log(f"could not create the recorder database ({type(err).__name__}: {err}): HA creates it")
        remove_partial(config / f"{DATABASE}.hems-new")
    return 0


if __name__ == "__main__":
    sys.exit(main())
