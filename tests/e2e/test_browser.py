"""A householder's view: headless Chromium logs in to Home Assistant through nginx (HTTPS,
the real login form of the pinned HA's frontend) and opens the Energy dashboard, whose charts
show the simulated household's days (backfilled by `make demo`, no waiting for statistics).
The screenshot is kept as docs/screenshots/energy-dashboard.png when HEMS_UPDATE_SCREENSHOTS=1.

The bars are looked for one day back from the dashboard's default period (today; yesterday in
the first hour after midnight, the 2026 frontend's own rule), a whole day inside the backfilled
week at any time of day. Today itself holds backfilled hours only from midnight to the hour the
stack started, so just after 01:00 with a stack started after midnight it had none: one bar
from the recorder's live 5-minute statistics, until the hourly compile at about 01:12 (seen with
the browser in UTC+8 at 01:01, the stack started at 00:57 there)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from helpers.chromium import CHROMIUM, Chromium

from .conftest import REPO, Stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.homeassistant,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="chromium is not installed (make setup)"),
]

#: Elements matching a CSS selector anywhere, shadow roots included (HA's frontend is made of
#: web components, so document.querySelector cannot see its inputs).
DEEP = """window.deep = (sel) => {
  const out = [];
  const walk = (root) => root.querySelectorAll('*').forEach((el) => {
    if (el.matches(sel)) out.push(el);
    if (el.shadowRoot) walk(el.shadowRoot);
  });
  walk(document);
  return out;
}"""


#: The Electricity chart's series with at least one non-zero bar (names are the entities' names).
SERIES_WITH_DATA = """deep('hui-energy-usage-graph-card').flatMap((card) => (card._chartData || [])
  .filter((series) => (series.data || []).some((point) => point.value && point.value[1] !== 0))
  .map((series) => series.name))"""


#: The usage chart's first hour, in ms since the epoch.
CHART_START = "deep('hui-energy-usage-graph-card').map((card) => card._start.getTime())[0]"

#: The period selector's Previous button (HA 2026: an ha-icon-button in its shadow root).
PREVIOUS = """deep('ha-icon-button').find((button) =>
  button.getRootNode().host?.localName === 'hui-energy-period-selector' && button.label === 'Previous')"""


async def test_login_through_nginx_and_energy_dashboard_charts_the_household(stack: Stack, tmp_path: Path) -> None:
    async with Chromium(tmp_path / "chromium") as browser:
        page = await browser.new_page()
        await page.navigate(f"{stack.https_url}/energy")
        # not logged in: the frontend sends us to its login form (2026: plain inputs and an
        # ha-button, no mwc-button any more)
        await page.wait_for(f"({DEEP}, deep('input[name=username]').length === 1)")
        assert "/auth/authorize" in await page.evaluate("location.pathname")
        await page.evaluate("deep('input[name=username]')[0].focus()")
        await page.insert_text("hems")
        await page.evaluate("deep('input[name=password]')[0].focus()")
        await page.insert_text(stack.secret("ha_password"))
        await page.evaluate("deep('ha-button').find((b) => /log in/i.test(b.textContent)).click()")
        # logged in: back on /energy (/energy/overview in 2026) with the dashboard's cards drawn (the page reloads after
        # the login, so `deep` is defined again in every expression)
        try:
            await page.wait_for(
                f"({DEEP}, location.pathname.startsWith('/energy') && deep('hui-energy-distribution-card').length > 0)",
                timeout=90,
            )
        except TimeoutError:
            # e.g. Energy preferences without `device_consumption_water`: the 2026 panel throws
            # in getReferencedStatisticIdsPower and shows its spinner forever
            panel = await page.evaluate(f"({DEEP}, deep('ha-panel-energy').map((p) => p.shadowRoot.innerHTML))")
            raise AssertionError(f"the Energy panel never drew its cards: {str(panel)[:500]}") from None
        # the frontend holds our meters' states
        power = await page.evaluate("document.querySelector('home-assistant').hass.states['sensor.hems_grid_power']")
        assert power is not None
        assert power["attributes"]["unit_of_measurement"] == "W"
        # and the Electricity chart has bars from the backfilled week: the day before the default
        # period (the period selector's Previous), whole in that week whatever the time of day
        default_start = await page.wait_for(f"({DEEP}, {CHART_START})")
        await page.wait_for(f"({DEEP}, !!{PREVIOUS})")
        await page.evaluate(f"({DEEP}, {PREVIOUS}.click())")
        series = await page.wait_for(
            f"({DEEP}, {CHART_START} < {default_start} && {SERIES_WITH_DATA}.length >= 2 && {SERIES_WITH_DATA})",
            timeout=60,
        )
        assert "Grid Energy import" in series, series
        await asyncio.sleep(2)  # let the charts finish their entry animation before the picture
        shot = await page.screenshot()
    (tmp_path / "energy-dashboard.png").write_bytes(shot)
    assert shot.startswith(b"\x89PNG")
    if os.environ.get("HEMS_UPDATE_SCREENSHOTS") == "1":
        (REPO / "docs" / "screenshots" / "energy-dashboard.png").write_bytes(shot)
