"""The settings the SD-card write budget rests on (docs/benchmarks.md, "Write budget"), pinned.

The figures come from `tests/bench/bench_sd_writes.py` (`make bench`); this file only keeps the
settings they were measured with from drifting: what Home Assistant's recorder keeps of the
bridge's entities and how often it commits, the bridge's recorded step, and how often the broker
saves its retained set.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from pathlib import Path

import pytest
import yaml

from helpers.homeassistant import run_ha_python
from helpers.release import REPO
from meterbridge.config import BridgeConfig
from meterbridge.model import MeterDescription, Quantity
from meterbridge.sections import HomeAssistantConfig
from meterbridge.sinks.homeassistant.discovery import (
    AVERAGED,
    Topics,
    average_discovery_message,
    discovery_message,
)

RECORDER = yaml.safe_load((REPO / "ha-config" / "packages" / "hems.yaml").read_text())["recorder"]
METER = MeterDescription("heat_pump", "Heat pump", "shelly")


def excluded(entity_id: str) -> bool:
    """Whether the release's recorder leaves `entity_id` out (HA matches its globs as fnmatch does)."""
    globs = RECORDER["exclude"]["entity_globs"]
    return entity_id.split(".")[0] in RECORDER["exclude"]["domains"] or any(
        fnmatch.fnmatchcase(entity_id, glob) for glob in globs
    )


def test_recorder_commits_with_the_statistics_run_and_keeps_ten_days() -> None:
    # The recorder commits before each 5-minute statistics run anyway (recorder/tasks.py,
    # RecorderTask.commit_before): 300 s is one commit per run; 30 s wrote ~10x more per state.
    assert RECORDER["commit_interval"] == 300
    assert RECORDER["purge_keep_days"] == 10
    assert "include" not in RECORDER, "an include list would change how the excludes apply"


def test_recorder_does_not_repack_every_month() -> None:
    # HA's default repack (a VACUUM after the purge on the second Sunday of the month) rewrites the
    # whole database about three times: 91-136 MB for a year-old home of 10 meters
    # (tests/bench/bench_recorder_repack.py); without it the file stays at its high-water mark
    assert RECORDER["auto_repack"] is False
    assert RECORDER.get("auto_purge", True) is True, "the nightly purge keeps the file from growing"


def test_recorder_keeps_what_is_published_once_a_step_and_leaves_out_the_live_series() -> None:
    topics = Topics()
    for quantity in Quantity:
        _, payload = discovery_message(topics, "home", METER, quantity)
        entity_id = payload["default_entity_id"]
        if payload["state_topic"] == topics.meter_recorded(METER.meter_id):
            assert not excluded(entity_id), f"{entity_id} is published for the recorder but left out"
        if quantity in AVERAGED:
            assert excluded(entity_id), f"{entity_id} changes at every reading and is recorded"
            _, average = average_discovery_message(topics, "home", METER, quantity)
            assert not excluded(average["default_entity_id"]), average["default_entity_id"]
            assert average["state_topic"] == topics.meter_recorded(METER.meter_id)
    # the Energy dashboard's totals have statistics only when recorded
    for quantity in (Quantity.ENERGY_IMPORT, Quantity.ENERGY_EXPORT, Quantity.GAS_ENERGY, Quantity.HEAT_ENERGY):
        _, payload = discovery_message(topics, "home", METER, quantity)
        assert payload["state_topic"] == topics.meter_recorded(METER.meter_id)
        assert not excluded(payload["default_entity_id"])


def test_bridge_publishes_the_recorded_step_every_5_minutes_and_live_states_as_before() -> None:
    defaults = HomeAssistantConfig()
    assert defaults.recorded_interval_s == 300
    assert 300 % defaults.recorded_interval_s == 0
    assert (defaults.min_interval_s, defaults.power_deadband_w) == (5.0, 50.0)
    # the release's bridge configuration leaves them at their defaults
    release = yaml.safe_load((REPO / "services" / "meter-bridge" / "default-config.yaml").read_text())
    assert "homeassistant" not in release
    config = BridgeConfig.model_validate({"mqtt": {"username": "bridge", "password": "x"}})
    assert config.homeassistant.recorded_interval_s == 300


def test_broker_saves_its_retained_set_once_an_hour() -> None:
    entrypoint = (REPO / "services" / "mosquitto" / "entrypoint.sh").read_text()
    assert re.findall(r"^autosave_interval (\d+)$", entrypoint, re.MULTILINE) == ["3600"]
    assert re.findall(r"^persistence (\w+)$", entrypoint, re.MULTILINE) == ["true"]
    assert "autosave_on_changes" not in entrypoint, "would turn the interval into a count of changes"


def test_the_image_creates_the_recorder_database_with_small_pages_before_home_assistant() -> None:
    # services/homeassistant/hems_recorder_db.py; that HA adopts and keeps such a database:
    # tests/integration/test_ha_recorder_page_size.py
    sys.path.insert(0, str(REPO / "services" / "homeassistant"))
    import hems_recorder_db

    assert hems_recorder_db.PAGE_SIZE == 1024
    entrypoint = (REPO / "services" / "homeassistant" / "entrypoint.sh").read_text()
    steps = [line.split()[1] for line in entrypoint.splitlines() if line.startswith(("python3 ", "exec "))]
    assert steps.index("/usr/local/bin/hems_recorder_db.py") < steps.index("/init")
    dockerfile = (REPO / "services" / "homeassistant" / "Dockerfile").read_text()
    copies = [line.split()[1:] for line in dockerfile.replace("\\\n", " ").splitlines() if line.startswith("COPY ")]
    assert any(
        "services/homeassistant/hems_recorder_db.py" in args and args[-1] == "/usr/local/bin/" for args in copies
    )


@pytest.mark.homeassistant
def test_recorder_leaves_out_its_own_statistics_run_events(tmp_path: Path) -> None:
    # HA fires one after every 5-minute (hourly) statistics run and records it like any event: a
    # row (and its index entries) in every commit; the names are the pinned HA's own constants
    names = run_ha_python(
        [
            "-c",
            "from homeassistant import const;"
            " print(const.EVENT_RECORDER_5MIN_STATISTICS_GENERATED, const.EVENT_RECORDER_HOURLY_STATISTICS_GENERATED)",
        ],
        {},
        tmp_path,
    )
    assert names.returncode == 0, names.stderr
    five_minute, hourly = names.stdout.split()
    assert {five_minute, hourly} <= set(RECORDER["exclude"]["event_types"])


@pytest.mark.homeassistant
def test_home_assistant_writes_no_log_file_to_the_card(tmp_path: Path) -> None:
    # the release sets the variable; the pinned HA's own bootstrap decides from it whether
    # home-assistant.log is written (bootstrap._log_file_disabled_reason)
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    environment = compose["services"]["homeassistant"]["environment"]
    code = (
        "from homeassistant import bootstrap;"
        " print(bootstrap.ENV_DISABLE_LOG_FILE, bootstrap._log_file_disabled_reason(),"
        " bootstrap.LOG_FILE_DISABLED_REASON_ENVIRONMENT)"
    )
    released = run_ha_python(["-c", code], {"HA_DISABLE_LOG_FILE": environment["HA_DISABLE_LOG_FILE"]}, tmp_path)
    assert released.returncode == 0, released.stderr
    name, reason, environment_reason = released.stdout.split()
    assert name in environment
    assert reason == environment_reason
    unset = run_ha_python(["-c", code], {}, tmp_path)
    assert unset.returncode == 0, unset.stderr
    assert unset.stdout.split()[1] == "None"  # without it HA writes /config/home-assistant.log
