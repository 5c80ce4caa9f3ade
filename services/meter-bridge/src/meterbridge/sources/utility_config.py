"""Settings every utility-portal source (`opower`, `duke_energy`) shares, apart from the poller."""

from __future__ import annotations

from pydantic import Field

from ..configbase import HaStatisticsSourceBase


class UtilityPollConfigBase(HaStatisticsSourceBase):
    """Settings every utility-portal source shares."""

    accounts: list[str] = Field(
        default_factory=list, description="Only these account numbers / meter serials (empty: every account)."
    )
    interval_h: float = Field(default=12.0, gt=0, description="Hours between two polls.")
    days_back: int = Field(default=3, ge=1, le=400, description="Days of usage asked for on each poll.")
    retry_initial_s: float = Field(
        default=60.0, gt=0, description="First wait after an outage (doubles, up to `interval_h`)."
    )
    auth_retry_h: float = Field(
        default=24.0, ge=0, description="Hours before refused credentials/MFA are tried again (0: only after restart)."
    )
    stale_after_s: float = Field(
        default=3 * 86400.0, gt=0, description="Unhealthy when no usage was imported for this long."
    )
