"""Every meter source family, one line each: the one place a family is registered.

A family is its own files (a config model whose `type` literal names it, a pure parser, a
`Source`, fixtures under `tests/fixtures/`) plus one `SourceFamily` line in
`SOURCE_FAMILIES`. Everything else is derived from this table: the `sources` union of the
config schema (`config.BridgeConfig`), the dispatch from a config to its running source
(`sources.registry.build_source`), the README's configuration reference (`docs`), the fuzz
targets (`tests/reliability/test_fuzz_parsers.py`) and the fixture walk
(`tests/unit/test_fixtures.py`).

Factories import their source module when called, so loading the schema loads no
transport (MQTT, aiohttp, serial, aiodukeenergy): only the families a site configures
are ever imported.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import ParseError
from .sections import MqttContext
from .sources import Source
from .sources.duke_energy_config import DukeEnergySourceConfig
from .sources.emu2.config import Emu2SourceConfig
from .sources.emu2.parser import Emu2Parser
from .sources.glow import parser as glow_parser
from .sources.glow.config import GlowSourceConfig
from .sources.green_button.config import GreenButtonSourceConfig
from .sources.green_button.espi import parse_bytes as parse_espi
from .sources.ha_config import HaSourceConfig
from .sources.mqtt import parser as mqtt_parser
from .sources.mqtt.config import MqttMeterConfig, MqttSourceConfig
from .sources.opower_config import OpowerSourceConfig
from .sources.shelly import parser as shelly_parser
from .sources.shelly.config import ShellySourceConfig
from .sources.simulated_config import SimulatedSourceConfig
from .sources.tasmota import parser as tasmota_parser
from .sources.tasmota.config import TasmotaSourceConfig
from .sources.zigbee2mqtt import parser as z2m_parser
from .sources.zigbee2mqtt.config import Zigbee2MqttSourceConfig

#: Builds the running source from its config and the bridge's broker context.
SourceFactory = Callable[[Any, MqttContext], Source[Any]]
#: Raw payload in, readings (or whatever the parser yields) out; raises only `ParseError`.
RawParser = Callable[[bytes], object]
#: The receive time raw parsers stamp readings with (fuzz runs are reproducible).
_RECEIVED = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SourceFamily:
    """One meter family: its config model (whose `type` literal is the family's name) and the rest."""

    config: type[Any]
    factory: SourceFactory
    #: Makes a parser for arbitrary raw payloads of this family's devices (every entry point
    #: in turn): the fuzz target. A fresh one per fuzz run, so a streaming parser keeps state.
    parser: Callable[[], RawParser] | None = None
    #: The recorded/documented inputs, a glob under `tests/fixtures/` (`glow/*.payload.json`);
    #: `tests/fixtures/<folder>/check.py` checks each against the expectations beside it.
    fixtures: str | None = None

    @property
    def type(self) -> str:
        """The family's `type` name, from its config model's literal."""
        (name,) = typing.get_args(self.config.model_fields["type"].annotation)
        return str(name)


# -- factories: each imports its source only when a configured source needs it ----------------


def _client_id(context: MqttContext, source_id: str) -> str:
    return f"{context.client_id}-{source_id}"


def _simulated(config: SimulatedSourceConfig, context: MqttContext) -> Source[Any]:
    from .sources.simulated import SimulatedSource

    return SimulatedSource(config)


def _shelly(config: ShellySourceConfig, context: MqttContext) -> Source[Any]:
    from .sources.shelly.source import ShellySource

    return ShellySource(config, context)


def _zigbee2mqtt(config: Zigbee2MqttSourceConfig, context: MqttContext) -> Source[Any]:
    from .sources.zigbee2mqtt.source import Zigbee2MqttSource

    return Zigbee2MqttSource(config, context.mqtt, _client_id(context, config.id))


def _glow(config: GlowSourceConfig, context: MqttContext) -> Source[Any]:
    from .sources.glow.source import GlowSource

    return GlowSource(config, context.mqtt, _client_id(context, config.id))


def _mqtt(config: MqttSourceConfig, context: MqttContext) -> Source[Any]:
    from .sources.mqtt.source import MqttSource

    return MqttSource(config, context.mqtt, _client_id(context, config.id))


def _ha(config: HaSourceConfig, context: MqttContext) -> Source[Any]:
    from .sources.ha import HaSource

    return HaSource(config)


def _green_button(config: GreenButtonSourceConfig, context: MqttContext) -> Source[Any]:
    from .sources.green_button.source import GreenButtonSource

    return GreenButtonSource(config)


def _opower(config: OpowerSourceConfig, context: MqttContext) -> Source[Any]:
    from .sources.opower import OpowerSource

    return OpowerSource(config, context)


def _duke_energy(config: DukeEnergySourceConfig, context: MqttContext) -> Source[Any]:
    from .sources.duke_energy import DukeEnergySource  # aiodukeenergy: 9 MiB of JWT and crypto

    return DukeEnergySource(config, context)


def _tasmota(config: TasmotaSourceConfig, context: MqttContext) -> Source[Any]:
    from .sources.tasmota.source import TasmotaSource

    return TasmotaSource(config, context.mqtt, _client_id(context, config.id))


def _emu2(config: Emu2SourceConfig, context: MqttContext) -> Source[Any]:
    from .sources.emu2.source import Emu2Source

    return Emu2Source(config)


# -- raw parsers (fuzz targets) -------------------------------------------------------------------


def _each(*calls: Callable[[], object]) -> None:
    """Run every call, each on its own: one raising `ParseError` does not skip the others."""
    for call in calls:
        with contextlib.suppress(ParseError):
            call()


def _emu2_raw() -> RawParser:
    return Emu2Parser("meter").feed  # one stream per run: its partial buffer must stay bounded


def _shelly_raw() -> RawParser:
    def parse(data: bytes) -> object:
        if len(data) < 8:
            shelly_parser.parse_online(data)
        frame = shelly_parser.decode_frame(data)
        parser = shelly_parser.ShellyDeviceParser(shelly_parser.MeterNaming("shellypro3em-0001", "shelly"))
        parser.full(frame.params, _RECEIVED)
        return parser.delta(frame.params, _RECEIVED)

    return parse


def _zigbee2mqtt_raw() -> RawParser:
    def parse(data: bytes) -> None:
        _each(
            lambda: z2m_parser.parse_devices(data),
            lambda: z2m_parser.parse_state(data, "plug", {"power": "W", "energy": "kWh"}, _RECEIVED),
            lambda: z2m_parser.parse_availability(data),
        )

    return parse


def _glow_raw() -> RawParser:
    def parse(data: bytes) -> None:
        _each(
            lambda: glow_parser.parse_meter("electricitymeter", data, "glow", _RECEIVED),
            lambda: glow_parser.parse_meter("gasmeter", data, "gas", _RECEIVED),
            lambda: glow_parser.parse_state(data),
        )

    return parse


def _mqtt_raw() -> RawParser:
    # One meter per preset and shape: JSON key paths with a list channel, plain numbers, on/off.
    meters = [
        {"id": "tasmota", "preset": "tasmota", "device": "plug", "channel": 1},
        {"id": "esphome", "preset": "esphome", "device": "node", "sensors": {"temperature": "t"}},
        {
            "id": "onoff",
            "on_off": {"topic": "plug/state", "key": "POWER", "on_w": 60},
            "values": [{"quantity": "heat_energy", "topic": "hp/state", "key": "heat.total", "unit": "Wh"}],
        },
    ]
    parsers = [mqtt_parser.MeterParser(MqttMeterConfig.model_validate(meter).plan()) for meter in meters]

    def parse(data: bytes) -> None:
        for parser in parsers:
            for topic in parser.plan.subscriptions:
                _each(lambda: parser.parse(topic, data, _RECEIVED), lambda: parser.availability(data))  # noqa: B023

    return parse


def _tasmota_raw() -> RawParser:
    def parse(data: bytes) -> None:
        _each(lambda: tasmota_parser.parse_config(data), lambda: tasmota_parser.energy_channels(data))

    return parse


def _green_button_raw() -> RawParser:
    return parse_espi


SOURCE_FAMILIES: tuple[SourceFamily, ...] = (
    SourceFamily(SimulatedSourceConfig, _simulated),
    SourceFamily(ShellySourceConfig, _shelly, _shelly_raw, "shelly/*.json"),
    SourceFamily(Zigbee2MqttSourceConfig, _zigbee2mqtt, _zigbee2mqtt_raw, "zigbee2mqtt/*.payload.json"),
    SourceFamily(GlowSourceConfig, _glow, _glow_raw, "glow/*.payload.json"),
    SourceFamily(MqttSourceConfig, _mqtt, _mqtt_raw, "mqtt/*.payload"),
    SourceFamily(HaSourceConfig, _ha),
    SourceFamily(GreenButtonSourceConfig, _green_button, _green_button_raw, "green_button/*.xml"),
    SourceFamily(OpowerSourceConfig, _opower),
    SourceFamily(DukeEnergySourceConfig, _duke_energy),
    SourceFamily(Emu2SourceConfig, _emu2, _emu2_raw, "emu2/*.xml"),
    SourceFamily(TasmotaSourceConfig, _tasmota, _tasmota_raw, "tasmota/*.config.json"),
)


def family_of(config: object) -> SourceFamily:
    """The family whose config model `config` is; raises `TypeError` for none."""
    for family in SOURCE_FAMILIES:
        if type(config) is family.config:
            return family
    raise TypeError(f"no source family has the config {type(config).__name__}")
