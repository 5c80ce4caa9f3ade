"""`type: shelly` in the config schema and the CLI wiring."""

from __future__ import annotations

from pathlib import Path

import pytest

from meterbridge.cli import build_parser
from meterbridge.config import load_config
from meterbridge.errors import ConfigError
from meterbridge.sources.registry import build_source
from meterbridge.sources.shelly.source import ShellySource

YAML = """\
mqtt: {host: localhost, username: bridge, password: secret}
sources:
  - type: shelly
    id: shelly
    devices:
      - {prefix: shellypro3em-0cb815fc11f8, id: grid}
      - {prefix: shellyproem50-08f9e0e67204, id: main, channels: {"1": solar}}
"""


def test_shelly_source_config_loads_and_builds(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(YAML)
    config = load_config(path)
    source = build_source(config.sources[0], config.mqtt_context)
    assert isinstance(source, ShellySource)
    assert source.devices["shellyproem50-08f9e0e67204"].naming.channel(1) == "solar"
    assert source.devices["shellypro3em-0cb815fc11f8"].naming.phase(0, "a") == "shelly_grid_a"


def test_duplicate_prefix_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(YAML.replace("shellyproem50-08f9e0e67204", "shellypro3em-0cb815fc11f8"))
    with pytest.raises(ConfigError, match="devices listed twice"):
        load_config(path)


def test_provision_subcommand_is_registered() -> None:
    args = build_parser().parse_args(["shelly", "provision", "10.0.0.5", "--mqtt-server", "10.0.0.2:1883"])
    assert args.hosts == ["10.0.0.5"]
    assert args.identities is None  # SHELLY_IDENTITIES_DIR or where the release mounts it


def test_provision_has_no_shared_mqtt_password_option() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["shelly", "provision", "10.0.0.5", "--mqtt-server", "x:1", "--mqtt-user", "shelly"])
