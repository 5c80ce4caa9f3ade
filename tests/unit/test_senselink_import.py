"""`meter-bridge import senselink`: SenseLink's documented configs (tests/fixtures/senselink/) convert.

Each fixture's expected `sources`, kasa `plugs` and named lines are beside it; the CLI's output is
a valid bridge config (checked by the schema) that keeps every MAC and device id and no secret.
The plugs' answers to a real Kasa client are tests/integration/test_senselink_migration.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from meterbridge.cli import main
from meterbridge.config import validate_data
from meterbridge.senselink import convert, slug
from meterbridge.yamlsource import load_yaml

FIXTURES = Path(__file__).parents[1] / "fixtures" / "senselink"
DEFAULT_CONFIG = Path(__file__).parents[2] / "services" / "meter-bridge" / "default-config.yaml"
CASES = sorted(p.stem for p in FIXTURES.glob("*.yml"))


@pytest.mark.parametrize("case", CASES)
def test_documented_configs_convert_as_expected(case: str) -> None:
    conversion = convert(load_yaml((FIXTURES / f"{case}.yml").read_text(), {}))
    expected = json.loads((FIXTURES / f"{case}.expected.json").read_text())
    assert conversion.sources == expected["sources"]
    assert conversion.plugs == expected["plugs"]
    assert [[s.line, s.key, s.verdict] for s in conversion.skipped] == expected["skipped"]
    assert len(conversion.notes) == expected["notes"]


@pytest.mark.parametrize("case", CASES)
def test_cli_prints_a_valid_config_that_keeps_what_sense_saw_and_no_secret(
    case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = FIXTURES / f"{case}.yml"
    assert main(["import", "senselink", str(source), "--into", str(DEFAULT_CONFIG)]) == 0
    out, err = capsys.readouterr()
    converted = yaml.safe_load(out)
    env = {"MQTT_PASSWORD": "x" * 16, "HA_TOKEN": "t" * 20}
    config, problems = validate_data(load_yaml(out, env))
    assert problems == [], problems
    senselink = yaml.safe_load(source.read_text())
    wanted = {}
    for entry in senselink["sources"]:
        for plug in next(iter(entry.values()))["plugs"]:
            ((plug_id, details),) = plug.items()
            # SenseLink's answers carried the MAC as deviceId (plug_instance.py, generate_response)
            wanted[slug(plug_id)] = (details["mac"].upper(), details["mac"].upper())
    got = {plug.id: (plug.mac, plug.device_id) for plug in config.kasa.plugs}
    assert got == wanted
    assert converted["kasa"]["enabled"] is True
    for secret in ("your_token_here", "mqtt_password_here"):
        assert secret not in out
    for skipped in convert(load_yaml(source.read_text(), {})).skipped:
        assert f"{source}:{skipped.line}: {skipped.key}" in err  # every line left behind is named


def test_a_file_that_is_not_senselinks_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "other.yml"
    path.write_text("mqtt: {host: x}\n")
    conversion = convert(load_yaml(path.read_text(), {}))
    assert [str(s) for s in conversion.skipped] == [
        "line 1: (file): not carried over: not a SenseLink configuration: no top-level `sources` list"
    ]
    path.write_text("sources: [\n")
    assert main(["import", "senselink", str(path)]) == 2
    assert "YAML syntax error" in capsys.readouterr().err


def test_unknown_keys_and_elements_are_named() -> None:
    text = """sources:
- static:
    plugs:
    - Lamp:
        mac: 53:75:31:00:00:01
        max_watts: 7
        colour: red
- aggregate:
    plugs:
    - Room:
        mac: 53:75:31:00:00:02
        elements: [Lamp, Ghost]
- zwave:
    plugs: []
"""
    conversion = convert(load_yaml(text, {}))
    assert [(s.line, s.key) for s in conversion.skipped] == [
        (7, "sources.0.static.plugs.0.Lamp.colour"),
        (13, "sources.2.zwave"),
        (12, "sources.1.aggregate.plugs.0.Room.elements.1"),
    ]
    assert conversion.plugs[-1]["aggregate"] == ["lamp"]
