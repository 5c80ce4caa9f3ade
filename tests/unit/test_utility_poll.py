"""Failure policy of the utility-portal sources (MFA, outages) and Duke's refresh-token store.

The opower client is the library-boundary fake of tests/integration/test_utility_poll_homeassistant.py
(opower hard-codes its hosts; see that module's docstring). No HA here: statistics off.
"""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest

from integration.test_utility_poll_homeassistant import Switch, fake_opower
from meterbridge.model import Event, Reading
from meterbridge.sources import SourceContext
from meterbridge.sources.duke_energy import RefreshTokenAuth
from meterbridge.sources.opower import OpowerSource, OpowerSourceConfig
from meterbridge.stats import SourceStats


def _source(switch: Switch, **extra: Any) -> OpowerSource:
    config = OpowerSourceConfig.model_validate(
        {"type": "opower", "id": "opw", "utility": "pge", "username": "u", "password": "p", **extra}
    )
    return OpowerSource(config, None, fake_opower(switch))


async def _until(check: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_mfa_prompt_gives_a_clear_status_and_waits_for_the_auth_policy() -> None:
    switch = Switch(mode="mfa")
    source = _source(switch, auth_retry_h=0)  # 0: not retried until the config changes
    stats = SourceStats("opower", 300)
    task = asyncio.create_task(source.run(SourceContext("opw", stats, lambda _e: None)))
    try:
        await _until(lambda: source.state.status == "mfa_required")
        assert "MFA required" in source.state.detail
        assert source.state.problem
        await asyncio.sleep(0.5)
        assert switch.logins == 1  # never retried in a loop
        assert stats.errors["mfa"] == 1
        assert not task.done()  # waits, does not crash
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_outage_backs_off_then_recovers_and_readings_flow() -> None:
    switch = Switch(mode="down")
    source = _source(switch, retry_initial_s=0.1, interval_h=1.0)
    events: list[Event] = []
    task = asyncio.create_task(source.run(SourceContext("opw", SourceStats("opower", 300), events.append)))
    try:
        await _until(lambda: switch.logins >= 3)
        assert source.state.status == "outage"
        assert "502" in source.state.detail
        switch.mode = "ok"
        await _until(lambda: source.state.status == "ok")
        assert not source.state.problem
        totals = [e for e in events if isinstance(e, Reading) and e.meter_id == "opw_1234567"]
        assert len({r.ts for r in totals}) == 24  # hourly totals, each at the end of its hour
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class FakeAuth0:
    """Stands in for `aiodukeenergy.Auth0Client.refresh_token` (Auth0 rotates refresh tokens)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def refresh_token(self, token: str) -> dict[str, Any]:
        self.seen.append(token)
        return {"id_token": "id-1", "access_token": "a-1", "refresh_token": f"{token}+", "expires_in": 3600}


async def test_duke_refresh_token_rotation_is_kept_private_and_reused(tmp_path: Path) -> None:
    store = tmp_path / "duke" / "token.json"
    auth0 = FakeAuth0()
    first = RefreshTokenAuth(None, auth0, "rt", store)  # type: ignore[arg-type]
    assert await first.async_get_id_token() == "id-1"
    assert await first.async_get_id_token() == "id-1"  # cached until it expires
    assert auth0.seen == ["rt"]
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    again = RefreshTokenAuth(None, auth0, "rt", store)  # type: ignore[arg-type]
    await again.async_get_id_token()
    assert auth0.seen == ["rt", "rt+"]  # the rotated token, not the stale one from the env
