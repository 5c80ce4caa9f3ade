"""The configuration schema: the single source of truth for validation and defaults.

The README's configuration table is generated from these models
(`meter-bridge config-reference`) and a test keeps the two in step.

A file is loaded with `load_config(path)`; every problem in it (syntax, unknown key,
wrong type, bad value, duplicate source id, unset variable) is collected and raised
together in one `ConfigError`, each as `FILE:LINE: key.path: reason`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import BaseModel, Field, ValidationError, create_model

from . import families
from .configbase import SourceConfigBase, StrictModel
from .discovery import DiscoveryConfig
from .errors import ConfigError
from .flex.config import FlexConfig
from .sections import (
    HealthConfig,
    HomeAssistantConfig,
    HubConfig,
    InfluxConfig,
    LoggingConfig,
    MqttConfig,
    MqttContext,
    SiteConfig,
    SpoolConfig,
    TotalsConfig,
)
from .sinks.kasa.config import KasaConfig
from .yamlsource import KeyPath, LoadedYaml, Problem, format_path, load_yaml

DEFAULT_CONFIG_PATH = Path("/data/config.yaml")
#: The fleet-wide template (a balena fleet variable): YAML under every home's config file.
FLEET_VARIABLE = "BRIDGE_FLEET_CONFIG"


def source_union(source_families: Iterable[families.SourceFamily]) -> Any:
    """The `sources` item type: every family's config model, told apart by `type`."""
    models = tuple(family.config for family in source_families)
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - built from a tuple


if TYPE_CHECKING:
    SourceConfig = SourceConfigBase
else:
    SourceConfig = source_union(families.SOURCE_FAMILIES)


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
    totals: TotalsConfig = Field(default_factory=TotalsConfig, description="Totals and clock rules of every reading.")
    sources: list[SourceConfig] = Field(default_factory=list, description="Meter sources, each with `type` and `id`.")
    discovery: DiscoveryConfig | None = Field(
        default=None,
        description="Meters found without a `sources` entry, and their roles in Home Assistant. Absent: all on "
        "while `sources` is empty, all off once it names a meter; present (even `{}`): each family on unless "
        "set to false.",
    )
    kasa: KasaConfig = Field(default_factory=KasaConfig, description="Emulated Kasa plugs for Sense.")
    flex: FlexConfig = Field(default_factory=FlexConfig, description="Demand response.")

    @property
    def mqtt_context(self) -> MqttContext:
        """The sections a broker-connected component needs (site, broker, Home Assistant)."""
        return MqttContext(self.site, self.mqtt, self.homeassistant)

    @property
    def found_by_default(self) -> DiscoveryConfig:
        """The discovery settings in force: `discovery`, or (absent) everything on only while `sources` is empty."""
        if self.discovery is not None:
            return self.discovery
        return DiscoveryConfig() if not self.sources else DiscoveryConfig.off()

    @property
    def client_id(self) -> str:
        """The MQTT client id the bridge uses."""
        return self.mqtt_context.client_id


def config_model(source_families: Iterable[families.SourceFamily] | None = None) -> type[BridgeConfig]:
    """The schema for `source_families` (default: the family table as it is now)."""
    chosen = tuple(families.SOURCE_FAMILIES if source_families is None else source_families)
    if chosen == SOURCE_FAMILIES_AT_IMPORT:
        return BridgeConfig
    sources_type: Any = list[source_union(chosen)]  # type: ignore[misc]  # a union built at run time
    sources_field: Any = Field(default_factory=list, description=BridgeConfig.model_fields["sources"].description)
    return create_model("BridgeConfig", __base__=BridgeConfig, sources=(sources_type, sources_field))


SOURCE_FAMILIES_AT_IMPORT = families.SOURCE_FAMILIES


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


def validate_data(loaded: LoadedYaml, model: type[BaseModel] | None = None) -> tuple[Any, list[Problem]]:
    """Validate loaded YAML against `model` (default: `config_model()`); return it (or None) and every problem."""
    model = config_model() if model is None else model
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


def merge_template(template: Any, home: Any) -> Any:
    """`home` over `template`: mappings merge key by key (the home's value wins), anything else
    (a list such as `sources`, a number) is the home's when it has one."""
    if isinstance(template, dict) and isinstance(home, dict):
        merged = dict(template)
        for key, value in home.items():
            merged[key] = merge_template(template[key], value) if key in template else value
        return merged
    return home


def _with_template(loaded: LoadedYaml, fleet: LoadedYaml) -> tuple[LoadedYaml, set[KeyPath]]:
    """The home's config over the fleet template, and the key paths that came from the template."""
    data = fleet.data if loaded.data is None else merge_template(fleet.data, loaded.data)
    merged = LoadedYaml(data, dict(loaded.lines), list(loaded.problems))
    from_fleet = {path for path in fleet.lines if path not in loaded.lines}
    for path in from_fleet:
        merged.lines[path] = fleet.lines[path]
    return merged, from_fleet


def load_config(path: Path, env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Load and validate a config file (over the fleet template in `BRIDGE_FLEET_CONFIG`, when set);
    raise `ConfigError` listing every problem, each naming the file or the variable it is in."""
    env = os.environ if env is None else env
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([f"{path}:1: (file): cannot read: {err}"]) from err
    loaded = load_yaml(text, env)
    from_fleet: set[KeyPath] = set()
    template = env.get(FLEET_VARIABLE, "")
    if template.strip():
        fleet = load_yaml(template, env)
        if fleet.problems or not isinstance(fleet.data, dict):
            reasons = fleet.problems or [Problem(1, (), "the fleet template must be a mapping of sections")]
            raise ConfigError([f"${FLEET_VARIABLE}:{p.line}: {format_path(p.path)}: {p.reason}" for p in reasons])
        if isinstance(loaded.data, dict) or loaded.data is None:
            loaded, from_fleet = _with_template(loaded, fleet)
    config, problems = validate_data(loaded)
    if problems:
        problems.sort(key=lambda p: p.line)

        def where(problem: Problem) -> str:
            for end in range(len(problem.path), 0, -1):
                if problem.path[:end] in from_fleet:
                    return f"${FLEET_VARIABLE}"
                if problem.path[:end] in loaded.lines:
                    break
            return str(path)

        raise ConfigError([f"{where(p)}:{p.line}: {format_path(p.path)}: {p.reason}" for p in problems])
    if not isinstance(config, BridgeConfig):  # pragma: no cover - validate_data returns the model
        raise TypeError(type(config).__name__)
    return config
