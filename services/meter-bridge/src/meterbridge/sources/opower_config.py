"""The `opower` source's settings, apart from the source so that the schema does not load aiohttp."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from .utility_config import UtilityPollConfigBase


class OpowerSourceConfig(UtilityPollConfigBase):
    """A utility account on Opower's platform, polled with the `opower` library."""

    type: Literal["opower"] = Field(description="Source family.")
    utility: str = Field(
        min_length=1, description="Utility name as `opower` knows it (e.g. `Pacific Gas and Electric Company (PG&E)`)."
    )
    username: SecretStr = Field(description="Login of the utility's website (use `${OPOWER_USERNAME}`).")
    password: SecretStr = Field(description="Its password (use `${OPOWER_PASSWORD}`).")
    totp_secret: SecretStr | None = Field(
        default=None, description="TOTP secret for utilities whose MFA accepts one (use `${OPOWER_TOTP_SECRET}`)."
    )

    @field_validator("utility")
    @classmethod
    def _known_utility(cls, value: str) -> str:
        from opower import select_utility

        try:
            select_utility(value)
        except ValueError as err:
            raise ValueError(f"unknown utility {value!r} (see `python -m opower --help`)") from err
        return value
