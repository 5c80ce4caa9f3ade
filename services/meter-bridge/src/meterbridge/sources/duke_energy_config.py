"""The `duke_energy` source's settings, apart from the source so that configuring the
bridge does not import aiodukeenergy (9 MiB with its JWT and crypto libraries) where no
Duke meter is configured."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from .utility_config import UtilityPollConfigBase


class DukeEnergySourceConfig(UtilityPollConfigBase):
    """Duke Energy meters, polled with the `aiodukeenergy` library."""

    type: Literal["duke_energy"] = Field(description="Source family.")
    refresh_token: SecretStr = Field(
        description="Auth0 refresh token of a Duke Energy app login (`${DUKE_REFRESH_TOKEN}`)."
    )
    token_file: Path = Field(
        default=Path("/data/duke_energy/token.json"), description="Where the rotated refresh token is kept (0600)."
    )
    timezone: str = Field(default="America/New_York", description="Time zone Duke's hourly data is in.")
