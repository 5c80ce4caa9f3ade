"""From a source's config to the running `Source`: the one place that knows every family."""

from __future__ import annotations

from typing import Any

from ..config import BridgeConfig
from ..configbase import SourceConfigBase
from . import Source
from .green_button.source import GreenButtonSource, GreenButtonSourceConfig
from .ha import HaSource, HaSourceConfig
from .shelly.config import ShellySourceConfig
from .shelly.source import ShellySource
from .simulated import SimulatedSource, SimulatedSourceConfig


def build_source(config: SourceConfigBase, bridge: BridgeConfig) -> Source[Any]:
    """The `Source` for `config` (MQTT-based sources use `bridge`'s broker and site).

    Raises `TypeError` for a config of no known family.
    """
    if isinstance(config, SimulatedSourceConfig):
        return SimulatedSource(config)
    if isinstance(config, HaSourceConfig):
        return HaSource(config)
    if isinstance(config, ShellySourceConfig):
        return ShellySource(config, bridge)
    if isinstance(config, GreenButtonSourceConfig):
        return GreenButtonSource(config)
    raise TypeError(f"no source implements {type(config).__name__}")
