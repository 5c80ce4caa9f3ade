"""From a source's config to the running `Source`: the one place that knows every family."""

from __future__ import annotations

from typing import Any

from ..config import BridgeConfig
from ..configbase import SourceConfigBase
from . import Source
from .duke_energy_config import DukeEnergySourceConfig
from .emu2.config import Emu2SourceConfig
from .emu2.source import Emu2Source
from .glow.config import GlowSourceConfig
from .glow.source import GlowSource
from .green_button.source import GreenButtonSource, GreenButtonSourceConfig
from .ha import HaSource, HaSourceConfig
from .opower import OpowerSource, OpowerSourceConfig
from .shelly.config import ShellySourceConfig
from .shelly.source import ShellySource
from .simulated import SimulatedSource, SimulatedSourceConfig
from .zigbee2mqtt.config import Zigbee2MqttSourceConfig
from .zigbee2mqtt.source import Zigbee2MqttSource


def build_source(config: SourceConfigBase, bridge: BridgeConfig) -> Source[Any]:
    """The `Source` for `config` in `bridge`; raises `TypeError` for a config of no known family.

    MQTT-fed sources use the bridge's broker, each with its own client id
    (`<bridge client id>-<source id>`).
    """
    if isinstance(config, SimulatedSourceConfig):
        return SimulatedSource(config)
    if isinstance(config, ShellySourceConfig):
        return ShellySource(config, bridge)
    if isinstance(config, Zigbee2MqttSourceConfig):
        return Zigbee2MqttSource(config, bridge.mqtt, f"{bridge.client_id}-{config.id}")
    if isinstance(config, GlowSourceConfig):
        return GlowSource(config, bridge.mqtt, f"{bridge.client_id}-{config.id}")
    if isinstance(config, HaSourceConfig):
        return HaSource(config)
    if isinstance(config, GreenButtonSourceConfig):
        return GreenButtonSource(config)
    if isinstance(config, OpowerSourceConfig):
        return OpowerSource(config, bridge)
    if isinstance(config, DukeEnergySourceConfig):
        from .duke_energy import DukeEnergySource  # imports aiodukeenergy: only where it is used

        return DukeEnergySource(config, bridge)
    if isinstance(config, Emu2SourceConfig):
        return Emu2Source(config)
    raise TypeError(f"no source implements {type(config).__name__}")
