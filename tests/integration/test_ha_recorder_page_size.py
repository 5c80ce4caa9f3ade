"""The recorder database the release creates with small pages (services/homeassistant/
hems_recorder_db.py, run by the image's entrypoint before HA's first start) is the one the pinned
Home Assistant uses: HA creates no other, moves nothing aside, writes its schema version, records
states into it, and keeps the page size across a restart and through its repack (VACUUM).

Why it matters: docs/benchmarks.md, "Write budget". The script runs under HA's own Python
(tests/helpers/homeassistant.py, run_ha_python), as the image runs it. About 2 minutes (two HA
starts); the script's own cases without HA take under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.homeassistant import REPO, HomeAssistant, run_ha_python

SCRIPT = REPO / "services" / "homeassistant" / "hems_recorder_db.py"
DATABASE = "home-assistant_v2.db"


def query(database: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Rows of a read-only query on HA's live database (WAL: readers see every commit)."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
        return db.execute(sql, args).fetchall()


def recorded(database: Path, entity_id: str) -> list[str]:
    """The states the recorder stored for `entity_id`, oldest first."""
    rows = query(
        database,
        "SELECT s.state FROM states s JOIN states_meta m ON s.metadata_id = m.metadata_id"
        " WHERE m.entity_id = ? ORDER BY s.state_id",
        entity_id,
    )
    return [str(state) for (state,) in rows]


def record(ha: HomeAssistant, entity_id: str, state: str) -> None:
    """Set a state over the REST API and wait (bounded) until the recorder committed it."""
    asyncio.run(ha.rest("POST", f"/api/states/{entity_id}", {"state": state}))
    deadline = time.monotonic() + 60  # hang bound: the helper's recorder commits every second
    while state not in recorded(ha.workdir / DATABASE, entity_id):
        assert time.monotonic() < deadline, f"{entity_id}={state} never recorded: {ha.tail_log()}"
        time.sleep(0.5)


def seed_database(config: Path, *args: str) -> str:
    made = run_ha_python([str(SCRIPT), *args], {"HA_CONFIG_DIR": str(config)}, config)
    assert made.returncode == 0, made.stderr
    return made.stderr


@pytest.mark.homeassistant
def test_home_assistant_adopts_the_small_page_database_and_keeps_it(tmp_path: Path) -> None:
    ha = HomeAssistant(tmp_path / "ha")
    database = ha.workdir / DATABASE
    assert "page size 1024" in seed_database(ha.workdir)
    schema_version = run_ha_python(
        ["-c", "from homeassistant.components.recorder.db_schema import SCHEMA_VERSION; print(SCHEMA_VERSION)"],
        {},
        tmp_path,
    ).stdout.strip()
    # as HA would have made it but for the pages: its tables, no schema version yet (HA adds it)
    assert query(database, "SELECT COUNT(*) FROM schema_changes") == [(0,)]
    ha.start()
    try:
        record(ha, "sensor.page_size_probe", "1")
        assert query(database, "PRAGMA page_size") == [(1024,)]
        assert query(database, "SELECT schema_version FROM schema_changes") == [(int(schema_version),)]
        assert query(database, "SELECT COUNT(*) FROM recorder_runs") == [(1,)]

        ha.restart()
        record(ha, "sensor.page_size_probe", "2")
        assert query(database, "PRAGMA page_size") == [(1024,)]

        # the monthly repack (VACUUM) keeps the page size of a WAL database
        asyncio.run(
            ha.rest("POST", "/api/services/logger/set_level", {"homeassistant.components.recorder.repack": "debug"})
        )
        asyncio.run(ha.rest("POST", "/api/services/recorder/purge", {"keep_days": 10, "repack": True}))
        # the recorder runs its tasks in order: a state recorded after the purge task comes after the VACUUM
        record(ha, "sensor.page_size_probe", "3")
        assert "Vacuuming SQL DB to free space" in (ha.workdir / "ha.log").read_text()
        assert query(database, "PRAGMA page_size") == [(1024,)]
        assert recorded(database, "sensor.page_size_probe") == ["1", "2", "3"]
    finally:
        ha.stop()
    log = (ha.workdir / "ha.log").read_text().lower()
    assert "corrupt" not in log, ha.tail_log()
    assert "unsupported" not in log, ha.tail_log()
    files = sorted(path.name for path in ha.workdir.glob(f"{DATABASE}*") if not path.name.endswith(("-wal", "-shm")))
    assert files == [DATABASE], "HA made another database or moved this one aside"
    assert query(database, "SELECT COUNT(*) FROM schema_changes") == [(1,)]


def test_an_existing_database_is_never_touched(tmp_path: Path) -> None:
    # an upgraded device keeps its database (4 KB pages) as it is; this needs no HA (it stops
    # before importing HA's schema), so the system Python runs it
    database = tmp_path / DATABASE
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE states (state TEXT)")
        db.execute("INSERT INTO states VALUES ('kept')")
        db.commit()
    before = database.read_bytes()
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], env={"HA_CONFIG_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "kept as it is (page size 4096)" in result.stderr
    assert database.read_bytes() == before
    assert not list(tmp_path.glob("*.hems-new*"))


def test_without_home_assistants_python_the_database_is_left_to_ha(tmp_path: Path) -> None:
    # the system Python has no homeassistant: nothing is created, the log says so, exit 0 (HA's start goes on)
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], env={"HA_CONFIG_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "HA creates the database" in result.stderr
    assert list(tmp_path.iterdir()) == []
