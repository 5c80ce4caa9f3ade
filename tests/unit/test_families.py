"""Adding a meter family is one line in the family table plus the family's own files.

A toy family goes in through `meterbridge.families.SOURCE_FAMILIES` alone and shows up in the
config schema, the dispatch, the README reference, the fuzz targets and the fixture walk.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field

from helpers.families import fixture_cases, fixture_checker, fuzz_targets
from meterbridge import app, families
from meterbridge.config import BridgeConfig, config_model, validate_data
from meterbridge.configbase import SourceConfigBase
from meterbridge.docs import config_reference
from meterbridge.errors import ParseError
from meterbridge.families import SourceFamily
from meterbridge.model import Event
from meterbridge.sections import MqttContext
from meterbridge.sinks import Sink
from meterbridge.sources import Source, SourceContext
from meterbridge.sources.registry import build_source
from meterbridge.yamlsource import load_yaml


class ToySourceConfig(SourceConfigBase):
    """A toy meter that reads volts from a text payload."""

    type: Literal["toy"] = Field(description="Source family.")
    volts_offset: float = Field(default=0.0, description="Added to every reading (V).")


class ToySource(Source[ToySourceConfig]):
    source_type = "toy"

    async def run(self, ctx: SourceContext) -> None:  # pragma: no cover - never run here
        raise NotImplementedError


def parse_toy(data: bytes) -> float:
    try:
        return float(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ParseError(str(err)) from err


CHECK = """
import json
from pathlib import Path

from unit.test_families import parse_toy


def check(path: Path) -> None:
    assert parse_toy(path.read_bytes()) == json.loads(path.with_suffix(".expected.json").read_text())
"""

TOY = SourceFamily(ToySourceConfig, lambda config, context: ToySource(config), lambda: parse_toy, "toy/*.txt")


@pytest.fixture
def with_toy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The table with the toy family added, and a fixtures root holding its folder."""
    monkeypatch.setattr(families, "SOURCE_FAMILIES", (*families.SOURCE_FAMILIES, TOY))
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "mains.txt").write_text("230.5")
    (folder / "mains.expected.json").write_text("230.5")
    (folder / "check.py").write_text(CHECK)
    return tmp_path


def _data(source: dict[str, Any]) -> dict[str, Any]:
    return {"mqtt": {"username": "bridge", "password": "secret"}, "sources": [source]}


def test_the_toy_family_is_in_the_config(with_toy: Path) -> None:
    loaded = load_yaml(json.dumps(_data({"type": "toy", "id": "bench", "volts_offset": 1.5})), {})
    config, problems = validate_data(loaded)
    assert problems == []
    assert isinstance(config, BridgeConfig)
    assert isinstance(config.sources[0], ToySourceConfig)
    assert config.sources[0].volts_offset == 1.5
    # and the schema as it was imported does not know it: the table is what counts
    assert validate_data(loaded, BridgeConfig)[1]


def test_the_toy_family_is_dispatched(with_toy: Path) -> None:
    config = config_model().model_validate(_data({"type": "toy", "id": "bench"}))
    source = build_source(config.sources[0], MqttContext(config.site, config.mqtt, config.homeassistant))
    assert isinstance(source, ToySource)


def test_the_toy_family_is_in_the_readme_reference(with_toy: Path) -> None:
    reference = config_reference()
    assert "### Source `type: toy`" in reference
    assert "A toy meter that reads volts from a text payload." in reference
    assert "| `sources[].volts_offset` | float | `0.0` | Added to every reading (V). |" in reference
    assert "type: toy" not in config_reference(BridgeConfig)


def test_the_toy_family_is_a_fuzz_target(with_toy: Path) -> None:
    make, corpus = fuzz_targets(with_toy)["toy"]
    assert corpus() == [b"230.5"]
    assert make()(b"1.5") == 1.5
    with pytest.raises(ParseError):
        make()(b"\xff")


def test_the_toy_family_is_in_the_fixture_walk(with_toy: Path) -> None:
    cases = [(family.type, path.name) for family, path in fixture_cases(with_toy)]
    assert ("toy", "mains.txt") in cases
    fixture_checker(TOY, with_toy)(with_toy / "toy" / "mains.txt")
    (with_toy / "toy" / "mains.expected.json").write_text("0")
    with pytest.raises(AssertionError):  # the walk can fail
        fixture_checker(TOY, with_toy)(with_toy / "toy" / "mains.txt")


def test_every_family_in_the_table_is_in_the_schema_and_the_reference() -> None:
    reference = config_reference()
    for family in families.SOURCE_FAMILIES:
        assert f"### Source `type: {family.type}`" in reference
    names = [f.type for f in families.SOURCE_FAMILIES]
    assert len(set(names)) == len(names), names


class ToySink(Sink):
    name = "toy"

    async def handle(self, events: Sequence[Event]) -> None:  # pragma: no cover - never fed here
        return None


async def test_a_toy_sink_is_one_line_in_the_sink_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app, "SINKS", (*app.SINKS, app.SinkKind("toy", lambda config, catalog: ToySink())))
    config = BridgeConfig.model_validate(_data({"type": "simulated", "id": "grid"}))
    bridge = app.Bridge(config)
    names = [sink.name for sink in bridge.sinks]
    assert names[-1] == "toy"
    assert "toy" in bridge.stats.sinks
    # a sink's table name is the name it reports under
    assert names == [kind.name for kind in app.SINKS if kind.build(config, bridge.catalog) is not None]
