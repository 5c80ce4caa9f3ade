"""Green Button history into InfluxDB: the CLI import and the `green_button` source, against
a real write peer (VictoriaMetrics speaking InfluxDB's `/api/v2/write`).

One point per hour, stamped at the end of the hour, `energy_import`/`energy_export` running
totals (kWh) in measurement `green_button`. Importing the same file again writes the same
points (same timestamps, same values): InfluxDB overwrites a point with the same series and
timestamp, so the series does not change.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from helpers.victoria import Series, Victoria, sample_count
from meterbridge.app import Bridge, history_sinks
from meterbridge.config import BridgeConfig

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "green_button"
CLI = [sys.executable, "-m", "meterbridge.cli", "import", "green-button"]
FALL = FIXTURES / "feed_15min_fall_dst_received_duplicate.xml"


def _config_data(victoria: Victoria, tmp_path: Path) -> dict[str, object]:
    return {
        "site": {"id": "home"},
        "mqtt": {"username": "bridge", "password": "unused"},
        "influx": {"url": victoria.url, "token": "t0ken", "flush_interval_s": 0.2},
        "spool": {"path": str(tmp_path / "spool" / "influx.sqlite")},
    }


def _expected_points() -> dict[int, float]:
    """Timestamp (ms, end of each hour) -> running import total (kWh), from the fixture's expectation."""
    expected = json.loads((FIXTURES / f"{FALL.stem}.expected.json").read_text())
    points, running = {}, 0.0
    for hour, (delivered, _received) in expected["hours"].items():
        running += delivered
        points[int(datetime.fromisoformat(hour).timestamp() * 1000) + 3_600_000] = running
    return points


def _samples(series: list[Series], name: str) -> list[tuple[int, float]]:
    return [(t, v) for s in series if s.labels["__name__"] == name for t, v in zip(s.timestamps, s.values, strict=True)]


def _import(config_file: Path, meter: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HA_TOKEN"}  # InfluxDB only
    return subprocess.run(
        [*CLI, str(FALL), "--config", str(config_file), "--meter", meter],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


async def test_cli_import_writes_hourly_totals_and_reimport_writes_the_same_points(
    victoria: Victoria, tmp_path: Path
) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(_config_data(victoria, tmp_path)))
    first = await asyncio.to_thread(_import, config_file, "pge_cli")
    assert first.returncode == 0, first.stderr
    assert "influx: 30 readings written" in first.stdout  # 25 import hours + 5 export hours

    match = '{__name__=~"green_button_.*", meter="pge_cli"}'
    series = await asyncio.to_thread(victoria.export, match, lambda s: sample_count(s) >= 30)
    assert {s.labels["__name__"] for s in series} == {"green_button_energy_import", "green_button_energy_export"}
    assert {k: v for k, v in series[0].labels.items() if k not in ("__name__", "db")} == {
        "site": "home",
        "meter": "pge_cli",
        "source": "pge_cli",
    }
    imported = _samples(series, "green_button_energy_import")
    expected = _expected_points()
    assert [t for t, _ in imported] == list(expected)
    assert [v for _, v in imported] == pytest.approx(list(expected.values()))
    exported = _samples(series, "green_button_energy_export")
    assert [v for _, v in exported] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])

    second = await asyncio.to_thread(_import, config_file, "pge_cli")
    assert second.returncode == 0, second.stderr
    # VictoriaMetrics keeps a re-sent sample beside the first (InfluxDB overwrites it): wait
    # for the second write to land, then the distinct points must be exactly the first ones.
    again = await asyncio.to_thread(victoria.export, match, lambda s: sample_count(s) >= 60)
    assert sample_count(again) == 60
    for name in ("green_button_energy_import", "green_button_energy_export"):
        before = dict(_samples(series, name))
        after = _samples(again, name)
        assert {t for t, _ in after} == set(before)
        for t, v in after:
            assert v == pytest.approx(before[t])


def test_history_sinks_only_with_an_enabled_influx_section(tmp_path: Path, victoria: Victoria) -> None:
    data = _config_data(victoria, tmp_path)
    assert history_sinks(None) == []
    assert history_sinks(BridgeConfig.model_validate({k: v for k, v in data.items() if k != "influx"})) == []
    [sink] = history_sinks(BridgeConfig.model_validate(data))
    assert sink.name == "influx"


async def test_green_button_source_writes_the_same_points_through_the_bridge_sink(
    victoria: Victoria, tmp_path: Path
) -> None:
    data = _config_data(victoria, tmp_path)
    data["sources"] = [{"type": "green_button", "id": "pge_src", "api": "file", "path": str(FALL)}]
    config = BridgeConfig.model_validate(data)
    from meterbridge.sinks.influx import InfluxSink

    async with Bridge(config, sinks=[InfluxSink(config.mqtt_context, config.influx, config.spool)]):
        match = '{__name__="green_button_energy_import", meter="pge_src"}'
        series = await asyncio.to_thread(victoria.export, match, lambda s: sample_count(s) >= 25)
    imported = _samples(series, "green_button_energy_import")
    expected = _expected_points()
    assert [t for t, _ in imported] == list(expected)
    assert [v for _, v in imported] == pytest.approx(list(expected.values()))
