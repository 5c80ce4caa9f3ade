"""Building blocks of the configuration schema, shared by `config` and the sources.

Kept apart from `config` so that each source module can define its own config model
(next to the code that reads it) without importing the whole schema.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr

#: Ids end up in MQTT topics, HA unique ids and entity ids: keep them to [a-z0-9_].
Identifier = Annotated[
    str,
    Field(pattern=r"^[a-z0-9][a-z0-9_]{0,62}$", description="lower-case letters, digits and _"),
]


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfigBase(StrictModel):
    """Settings every source has. Each source family adds its own `type` and keys."""

    id: Identifier = Field(description="Unique id of the source; also the meter id (prefix) in topics and entity ids.")
    name: str | None = Field(default=None, description="Name shown in Home Assistant (default: the id).")
    stale_after_s: float = Field(
        default=300.0,
        gt=0,
        description="`meter-bridge status` reports the source unhealthy when its last reading is older than this.",
    )

    @property
    def display_name(self) -> str:
        """The name to show people: `name`, or the id made readable."""
        return self.name or self.id.replace("_", " ").capitalize()


class HaStatisticsSourceBase(SourceConfigBase):
    """A source that imports hourly history into Home Assistant's long-term statistics."""

    ha_url: str = Field(
        default="http://127.0.0.1:8123",
        description="Home Assistant for long-term statistics (the bridge shares the host network with HA).",
    )
    ha_token: SecretStr | None = Field(
        default=None, description="HA long-lived admin token (use `${HA_TOKEN}`); none: no statistics import."
    )
