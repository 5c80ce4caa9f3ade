"""The configuration schema: the single source of truth for validation and defaults.

The README's configuration table is generated from these models
(`meter-bridge config-reference`) and a test keeps the two in step.

A file is loaded with `load_config(path)`; every problem in it (syntax, unknown key,
wrong type, bad value, duplicate source id, unset variable) is collected and raised
together in one `ConfigError`, each as `FILE:LINE: key.path: reason`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError

from .configbase import Identifier, StrictModel
from .errors import ConfigError
from .flex.config import FlexConfig
from .sinks.kasa.config import KasaConfig
from .sources.duke_energy_config import DukeEnergySourceConfig
from .sources.emu2.config import Emu2SourceConfig
from .sources.glow.config import GlowSourceConfig
from .sources.green_button.source import GreenButtonSourceConfig
from .sources.ha import HaSourceConfig
from .sources.opower import OpowerSourceConfig
from .sources.shelly.config import ShellySourceConfig
from .sources.simulated import SimulatedSourceConfig
from .sources.zigbee2mqtt.config import Zigbee2MqttSourceConfig
from .yamlsource import KeyPath, LoadedYaml, Problem, format_path, load_yaml

DEFAULT_CONFIG_PATH = Path("/data/config.yaml")


class SiteConfig(StrictModel):
    """Who this appliance belongs to."""

    id: Identifier = Field(default="home", description="Site id, part of every Home Assistant unique id.")
    name: str = Field(default="Home", description="Human name of the site.")
    currency: str = Field(
        default="GBP", pattern=r"^[A-Z]{3}$", description="ISO 4217 currency of prices (`GBP`, `USD`, `EUR`)."
    )


class MqttTlsConfig(StrictModel):
    """TLS towards the broker (off on the appliance: the broker is on the device's own network)."""

    enabled: bool = Field(default=False, description="Connect with TLS.")
    ca_file: Path | None = Field(default=None, description="CA bundle to verify the broker (default: system CAs).")
    insecure: bool = Field(default=False, description="Skip hostname verification (test set-ups only).")


class MqttConfig(StrictModel):
    """The MQTT broker the bridge publishes to. Anonymous access is not supported."""

    host: str = Field(default="localhost", description="Broker host name.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port.")
    username: str = Field(min_length=1, description="MQTT user (required).")
    password: SecretStr = Field(description="MQTT password (required; use `${MQTT_PASSWORD}`).")
    base_topic: str = Field(
        default="hems", pattern=r"^[^#+/][^#+]*[^#+/]$|^[^#+/]$", description="Prefix of every topic the bridge owns."
    )
    client_id: str | None = Field(default=None, description="MQTT client id (default: `meter-bridge-<site id>`).")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keep-alive interval.")
    tls: MqttTlsConfig = Field(default_factory=MqttTlsConfig, description="TLS settings.")


class HomeAssistantConfig(StrictModel):
    """How readings reach Home Assistant (MQTT discovery + retained JSON state)."""

    enabled: bool = Field(default=True, description="Publish discovery and state for Home Assistant.")
    discovery_prefix: str = Field(default="homeassistant", description="HA's MQTT discovery prefix.")
    min_interval_s: float = Field(
        default=5.0, ge=0, description="Least time between two state messages of one meter (0: publish every reading)."
    )
    power_deadband_w: float = Field(
        default=50.0, ge=0, description="A power change larger than this is published at once, ignoring the interval."
    )


class HealthConfig(StrictModel):
    """The local health endpoint (`/healthz`, `/metrics`) used by `meter-bridge status`."""

    enabled: bool = Field(default=True, description="Serve the health endpoint.")
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8099, ge=0, le=65535, description="Port to listen on (0: any free port).")


class LoggingConfig(StrictModel):
    """Log output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    format: Literal["text", "json"] = Field(default="text", description="`json` for fleet log shipping.")


class HubConfig(StrictModel):
    """The in-memory fan-out from sources to sinks."""

    queue_size: int = Field(
        default=10_000, ge=10, description="Events held per sink before the oldest are dropped (and counted)."
    )


SourceConfig = Annotated[
    SimulatedSourceConfig
    | ShellySourceConfig
    | Zigbee2MqttSourceConfig
    | GlowSourceConfig
    | HaSourceConfig
    | GreenButtonSourceConfig
    | OpowerSourceConfig
    | DukeEnergySourceConfig
    | Emu2SourceConfig,
    Field(discriminator="type"),
]


class InfluxConfig(StrictModel):
    """The InfluxDB 2 write path (`/api/v2/write`): batched line protocol from a durable spool."""

    enabled: bool = Field(default=True, description="Write readings to InfluxDB.")
    url: str = Field(default="http://influxdb:8086", description="InfluxDB base URL.")
    org: str = Field(default="hems", min_length=1, description="Organisation name (or id) to write to.")
    org_id: str | None = Field(
        default=None, description="Organisation id for the replication monitor (default: looked up by `org`)."
    )
    bucket: str = Field(default="meters", min_length=1, description="Bucket the readings go to.")
    token: SecretStr = Field(description="Write token (required; use `${INFLUX_TOKEN}`).")
    batch_size: int = Field(default=5000, ge=1, le=50_000, description="Most lines in one write request.")
    flush_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Longest time a line waits for its batch to fill; keep it below `spool.sync_interval_s`.",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="Timeout of one write request.")
    max_retry_delay_s: float = Field(
        default=60.0, ge=1, le=3600, description="Longest wait between two attempts after 5xx/429/connection errors."
    )
    replication_poll_s: float = Field(
        default=60.0,
        ge=0,
        description="Seconds between polls of `/api/v2/replications` for the Home Assistant sensors (0: off).",
    )


class SpoolConfig(StrictModel):
    """The on-disk store (SQLite, WAL) of every line InfluxDB has not acknowledged yet."""

    path: Path = Field(default=Path("/data/spool/influx.sqlite"), description="SQLite file of the spool.")
    max_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=64 * 1024,
        description="Most (compressed) bytes spooled; when full the oldest are dropped and counted.",
    )
    sync_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Longest time an unacknowledged reading is held only in memory (what `kill -9` may lose).",
    )
    quarantine_max_bytes: int = Field(
        default=16 * 1024 * 1024, ge=0, description="Most bytes of rejected (4xx) batches kept for inspection."
    )


class BridgeConfig(StrictModel):
    """The whole configuration file."""

    site: SiteConfig = Field(default_factory=SiteConfig, description="The site.")
    mqtt: MqttConfig = Field(description="MQTT broker (required).")
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig, description="Home Assistant.")
    health: HealthConfig = Field(default_factory=HealthConfig, description="Health endpoint.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    hub: HubConfig = Field(default_factory=HubConfig, description="Fan-out hub.")
    influx: InfluxConfig | None = Field(default=None, description="InfluxDB 2 (off when absent).")
    spool: SpoolConfig = Field(default_factory=SpoolConfig, description="Durable spool of the InfluxDB sink.")
    sources: list[SourceConfig] = Field(default_factory=list, description="Meter sources, each with `type` and `id`.")
    kasa: KasaConfig = Field(default_factory=KasaConfig, description="Emulated Kasa plugs for Sense.")
    flex: FlexConfig = Field(default_factory=FlexConfig, description="Demand response.")

    @property
    def client_id(self) -> str:
        """The MQTT client id the bridge uses."""
        return self.mqtt.client_id or f"meter-bridge-{self.site.id}"


# ---------------------------------------------------------------------------------
# Loading and error reporting


def _friendly(error_type: str, message: str) -> str:
    if error_type == "extra_forbidden":
        return "unknown key"
    if error_type == "missing":
        return "required key is missing"
    if error_type == "union_tag_invalid":
        return message.replace("Input tag", "unknown type").replace(" found using 'type'", "")
    return message


def _data_path(data: Any, loc: tuple[str | int, ...]) -> KeyPath:
    """Map a pydantic error location onto a path in the data.

    Pydantic inserts the discriminator value of a tagged union into `loc`
    (`sources.0.simulated.interval_s`); such parts are not keys and are skipped.
    """
    path: list[str | int] = []
    current: Any = data
    for part in loc:
        if isinstance(current, dict):
            if part in current:
                path.append(part)
                current = current[part]
            elif part == current.get("type"):
                continue  # the union's tag
            else:
                path.append(part)  # a missing or unknown key: it lives in this mapping
                current = None
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            path.append(part)
            current = current[part]
        elif current is not None:
            continue  # a validator's own location part (e.g. `function-after`)
    return tuple(path)


def _duplicate_ids(loaded: LoadedYaml) -> Iterator[Problem]:
    sources = loaded.data.get("sources") if isinstance(loaded.data, dict) else None
    if not isinstance(sources, list):
        return
    seen: dict[str, int] = {}
    for index, source in enumerate(sources):
        if not isinstance(source, dict) or not isinstance(source.get("id"), str):
            continue
        path: KeyPath = ("sources", index, "id")
        line = loaded.line_of(path)
        if source["id"] in seen:
            yield Problem(line, path, f"duplicate source id {source['id']!r} (first used on line {seen[source['id']]})")
        else:
            seen[source["id"]] = line


def validate_data(loaded: LoadedYaml, model: type[BaseModel] = BridgeConfig) -> tuple[Any, list[Problem]]:
    """Validate loaded YAML against `model`; return the model (or None) and every problem."""
    problems = list(loaded.problems)
    if loaded.data is None and problems:
        return None, problems  # a syntax error: nothing to validate
    data = loaded.data if loaded.data is not None else {}
    if not isinstance(data, dict):
        return None, [*problems, Problem(loaded.line_of(()), (), "the file must be a mapping of sections")]
    problems.extend(_duplicate_ids(loaded))
    reported = {problem.path for problem in problems}
    try:
        result = model.model_validate(data)
    except ValidationError as err:
        for error in err.errors(include_url=False, include_input=False):
            path = _data_path(data, error["loc"])
            # An unset variable was already reported; the empty string it left is not news.
            if path in reported:
                continue
            problems.append(Problem(loaded.line_of(path), path, _friendly(error["type"], error["msg"])))
        return None, problems
    return (None if problems else result), problems


def load_config(path: Path, env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Load and validate a config file; raise `ConfigError` listing every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([f"{path}:1: (file): cannot read: {err}"]) from err
    loaded = load_yaml(text, os.environ if env is None else env)
    config, problems = validate_data(loaded)
    if problems:
        problems.sort(key=lambda p: p.line)
        raise ConfigError([f"{path}:{p.line}: {format_path(p.path)}: {p.reason}" for p in problems])
    if not isinstance(config, BridgeConfig):  # pragma: no cover - validate_data returns the model
        raise TypeError(type(config).__name__)
    return config
