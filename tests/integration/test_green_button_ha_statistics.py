"""Green Button import into the pinned Home Assistant's long-term statistics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from helpers.homeassistant import PINNED_VERSION, HomeAssistant
from meterbridge.sources.green_button.espi import Direction
from meterbridge.sources.green_button.importer import import_summary, parse_file
from meterbridge.statistics import HaStatisticsClient

pytestmark = pytest.mark.homeassistant
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "green_button"
FALL = FIXTURES / "feed_15min_fall_dst_received_duplicate.xml"


def _hours(rows: list[dict]) -> list[tuple[str, float, float]]:
    return [(datetime.fromtimestamp(r["start"] / 1000, UTC).isoformat(), r["state"], r["sum"]) for r in rows]


async def test_import_gives_hourly_state_and_sum_and_reimport_changes_nothing(homeassistant: HomeAssistant) -> None:
    expected = json.loads((FIXTURES / f"{FALL.stem}.expected.json").read_text())
    summary = parse_file(FALL)
    async with HaStatisticsClient(homeassistant.url, homeassistant.token) as client:
        assert client.ha_version == PINNED_VERSION
        first = await import_summary(summary, "fall", "Fall", client)
    assert first.rows_written == {"hems:fall_energy_import": 25, "hems:fall_energy_export": 5}

    rows = _hours(await homeassistant.hourly_statistics("hems:fall_energy_import"))
    assert [hour for hour, _, _ in rows] == list(expected["hours"])
    running = 0.0
    for (hour, state, total), (exp_hour, exp_values) in zip(rows, expected["hours"].items(), strict=True):
        running += exp_values[0]
        assert hour == exp_hour
        assert state == pytest.approx(exp_values[0])
        assert total == pytest.approx(running)
    export = _hours(await homeassistant.hourly_statistics("hems:fall_energy_export"))
    assert [state for _, state, _ in export] == pytest.approx([1.0] * 5)  # 4 x 250 Wh per hour
    assert export[-1][2] == pytest.approx(expected["received_kwh"])

    async with HaStatisticsClient(homeassistant.url, homeassistant.token) as client:
        second = await import_summary(parse_file(FALL), "fall", "Fall", client)
    assert second.rows_written == {"hems:fall_energy_import": 0, "hems:fall_energy_export": 0}
    assert _hours(await homeassistant.hourly_statistics("hems:fall_energy_import")) == rows


async def test_overlapping_files_merge_and_the_sum_continues(homeassistant: HomeAssistant) -> None:
    summary = parse_file(FALL)
    hours = summary.hours[Direction.DELIVERED].kwh
    ordered = sorted(hours)
    early = {h: hours[h] for h in ordered[:15]}
    late = {h: hours[h] for h in ordered[10:]}  # overlaps the early part by 5 hours
    async with HaStatisticsClient(homeassistant.url, homeassistant.token) as client:
        await client.import_hours("hems:merge_energy_import", "Merge", early)
        written = await client.import_hours("hems:merge_energy_import", "Merge", late)
    assert len(written) == 10  # the 5 overlapping hours are unchanged
    rows = _hours(await homeassistant.hourly_statistics("hems:merge_energy_import"))
    assert len(rows) == 25
    assert rows[-1][2] == pytest.approx(summary.hours[Direction.DELIVERED].total())


def test_cli_imports_and_dry_run_writes_nothing(homeassistant: HomeAssistant) -> None:
    env = {**os.environ, "HA_URL": homeassistant.url, "HA_TOKEN": homeassistant.token}
    command = [sys.executable, "-m", "meterbridge.cli", "import", "green-button", str(FALL), "--meter", "cli"]
    dry = subprocess.run([*command, "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "readings: 120" in dry.stdout
    assert "first hour (UTC): 2024-11-03T07:00:00+00:00" in dry.stdout
    assert "nothing written" in dry.stdout
    real = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert real.returncode == 0, real.stderr
    assert "hems:cli_energy_import: 25 hours written" in real.stdout
