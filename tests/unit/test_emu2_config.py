"""`type: emu2` in the config schema, the registry and Home Assistant discovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from meterbridge.config import load_config
from meterbridge.errors import ConfigError
from meterbridge.model import MeterDescription, Quantity
from meterbridge.sinks.homeassistant.discovery import Topics, discovery_message
from meterbridge.sources.emu2.config import Emu2SourceConfig
from meterbridge.sources.emu2.source import Emu2Source
from meterbridge.sources.registry import build_source

_HEAD = "mqtt: {username: bridge, password: secret}\nsources:\n"


def test_emu2_source_from_yaml(tmp_path: Path) -> None:
    """A minimal emu2 source loads with its defaults and builds an `Emu2Source`."""
    path = tmp_path / "config.yaml"
    path.write_text(
        _HEAD + "  - {type: emu2, id: grid, port: /dev/serial/by-id/usb-x, meter_mac: '0x00078100011a4c66'}\n"
    )
    config = load_config(path)
    source = config.sources[0]
    assert isinstance(source, Emu2SourceConfig)
    assert (source.demand_interval_s, source.summation_interval_s) == (10, 60)
    assert isinstance(build_source(source, config.mqtt_context), Emu2Source)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("  - {type: emu2, id: grid, demand_interval_s: 0}\n", "sources[0].demand_interval_s"),
        ("  - {type: emu2, id: grid, meter_mac: 'zz'}\n", "sources[0].meter_mac"),
        ("  - {type: emu2, id: grid, baud: 9600}\n", "sources[0].baud"),
    ],
)
def test_emu2_config_errors_name_the_key(tmp_path: Path, line: str, key: str) -> None:
    """Bad emu2 settings are reported as FILE:LINE: key.path: reason."""
    path = tmp_path / "config.yaml"
    path.write_text(_HEAD + line)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:3: {key}:" in str(err.value)


def test_link_quality_is_a_diagnostic_percentage() -> None:
    """Link quality shows in HA as a % measurement under the device's diagnostics."""
    meter = MeterDescription(meter_id="grid", name="Grid", source_type="emu2")
    topic, payload = discovery_message(Topics(), "home", meter, Quantity.LINK_QUALITY)
    assert topic == "homeassistant/sensor/hems/hems_grid_link_quality/config"
    assert payload["unit_of_measurement"] == "%"
    assert payload["state_class"] == "measurement"
    assert payload["entity_category"] == "diagnostic"
    assert "device_class" not in payload


def test_unknown_fragments_counted_and_logged_once_per_name(caplog: pytest.LogCaptureFixture) -> None:
    """Every unknown fragment is counted; each name is logged once."""
    from meterbridge.sources import SourceContext
    from meterbridge.sources.emu2.parser import Emu2Parser
    from meterbridge.stats import SourceStats

    source = Emu2Source(Emu2SourceConfig(type="emu2", id="grid", port="/dev/null"))
    ctx = SourceContext("grid", SourceStats("emu2", 300), lambda event: None)
    unknown = b"<FastPollStatus><DeviceMacId>0x01</DeviceMacId></FastPollStatus>"
    other = b"<BillingPeriodList><DeviceMacId>0x01</DeviceMacId></BillingPeriodList>"
    parser = Emu2Parser("grid")
    with caplog.at_level("INFO", logger="meterbridge.sources.emu2"):
        for _ in range(3):
            source._handle(ctx, parser.feed(unknown + other), 0.0)
    assert ctx.stats.errors["unknown_fragment"] == 6
    logged = [r.getMessage() for r in caplog.records if "unknown fragment" in r.getMessage()]
    assert len(logged) == 2
