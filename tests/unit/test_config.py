"""Config: every problem reported with its file, line and key path; substitution."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterbridge.cli import main
from meterbridge.config import load_config
from meterbridge.errors import ConfigError
from meterbridge.yamlsource import load_yaml, substitute

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"

VALID = """\
site: {id: home}
mqtt:
  host: ${MQTT_HOST:-localhost}
  username: bridge
  password: ${MQTT_PASSWORD}
sources:
  - {type: simulated, id: grid, pv_peak_w: 3000}
  - {type: simulated, id: heat_pump, profile: heat_pump}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def problems_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    return info.value.problems


def test_valid_file_loads_with_defaults_and_substitution(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), {"MQTT_PASSWORD": "s3cret"})
    assert config.mqtt.host == "localhost"
    assert config.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)  # secrets never end up in logs through repr
    assert [s.id for s in config.sources] == ["grid", "heat_pump"]
    assert config.homeassistant.discovery_prefix == "homeassistant"
    assert config.client_id == "meter-bridge-home"


def test_three_mistakes_give_three_lines_with_file_line_and_path() -> None:
    path = FIXTURES / "three_mistakes.yaml"
    problems = problems_of(path)
    assert problems == [
        f"{path}:5: mqtt.port: Input should be a valid integer, unable to parse string as an integer",
        f"{path}:7: mqtt.password: environment variable MQTT_PASSWORD_THAT_IS_NOT_SET is not set and has no default",
        f"{path}:11: sources[0].colour: unknown key",
    ]


def test_check_config_cli_exits_2_and_prints_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "three_mistakes.yaml"
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert all(line.startswith(f"{path}:") for line in err)


def test_check_config_console_script_exit_codes(tmp_path: Path) -> None:
    good = write(tmp_path, VALID)
    ok = subprocess.run(
        [sys.executable, "-m", "meterbridge.cli", "check-config", "--config", str(good)],
        env={"MQTT_PASSWORD": "x", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "meterbridge.cli", "check-config", "--config", str(FIXTURES / "three_mistakes.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 3


def test_duplicate_source_id_wrong_type_bad_value_and_unknown_type(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
mqtt: {username: bridge, password: x}
sources:
  - type: simulated
    id: grid
  - type: simulated
    id: grid
    interval_s: -1
  - type: teleporter
    id: other
  - type: simulated
    id: Not-An-Id
""",
    )
    problems = problems_of(path)
    assert f"{path}:6: sources[1].id: duplicate source id 'grid' (first used on line 4)" in problems
    assert f"{path}:7: sources[1].interval_s: Input should be greater than 0" in problems
    assert any(p.startswith(f"{path}:8: sources[2]: unknown type 'teleporter'") for p in problems), problems
    assert any(p.startswith(f"{path}:11: sources[3].id: String should match pattern") for p in problems), problems
    assert len(problems) == 4


def test_missing_required_section_and_duplicate_key(tmp_path: Path) -> None:
    path = write(tmp_path, "site:\n  id: a\n  id: b\n")
    problems = problems_of(path)
    assert f"{path}:3: site.id: duplicate key (first set on line 2)" in problems
    assert f"{path}:1: mqtt: required key is missing" in problems


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, "mqtt:\n  username: bridge\n  password: [unclosed\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:4: (top level): YAML syntax error")


def test_unreadable_file(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path / "missing.yaml")
    assert "cannot read" in problem


def test_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- just\n- a list\n")
    assert problems_of(path) == [f"{path}:1: (top level): the file must be a mapping of sections"]


@pytest.mark.parametrize(
    ("text", "env", "expected", "missing"),
    [
        ("${A}", {"A": "1"}, "1", []),
        ("x${A}y", {"A": "1"}, "x1y", []),
        ("${A:-dflt}", {}, "dflt", []),
        ("${A:-dflt}", {"A": ""}, "dflt", []),
        ("${A:-dflt}", {"A": "set"}, "set", []),
        ("${A}", {}, "", ["A"]),
        ("${A}", {"A": ""}, "", []),
        ("$${A}", {"A": "1"}, "${A}", []),
        ("no vars $ here", {}, "no vars $ here", []),
        ("${A}/${B:-b}/${C}", {"A": "a"}, "a/b/", ["C"]),
    ],
)
def test_substitution(text: str, env: dict[str, str], expected: str, missing: list[str]) -> None:
    assert substitute(text, env) == (expected, missing)


def test_substitution_applies_to_strings_only() -> None:
    loaded = load_yaml("a: 5\nb: '${X}'\nc: true\nd:\n  - ${X}\n", {"X": "7"})
    assert loaded.data == {"a": 5, "b": "7", "c": True, "d": ["7"]}
    assert loaded.lines[("d", 0)] == 5


def test_yaml_that_pyyaml_cannot_construct_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "mqtt:\n  username: =\n")
    problems = problems_of(path)
    assert any(p.startswith(f"{path}:2: mqtt.username: YAML error") for p in problems), problems


@given(st.text(max_size=200))
def test_any_text_gives_problems_never_an_exception(text: str) -> None:
    from meterbridge.config import validate_data

    loaded = load_yaml(text, {})
    config, problems = validate_data(loaded)
    assert (config is None) == bool(problems)
    assert all(problem.line >= 1 for problem in problems)


def test_readme_reference_is_generated_from_the_schema() -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "readme_config.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
