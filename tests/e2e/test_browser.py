"""A householder's view: headless Chromium logs in to Home Assistant through nginx (HTTPS,
the real login form) and opens the Energy dashboard, which shows the bridge's meters.
The screenshot is kept as docs/screenshots/energy-dashboard.png when HEMS_UPDATE_SCREENSHOTS=1."""

from __future__ import annotations

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


async def test_login_through_nginx_and_energy_dashboard_shows_our_meters(stack: Stack, tmp_path: Path) -> None:
    async with Chromium(tmp_path / "chromium") as browser:
        page = await browser.new_page()
        await page.navigate(f"{stack.https_url}/energy")
        # not logged in: the frontend sends us to its login form
        await page.wait_for(f"({DEEP}, deep('input[name=username]').length === 1)")
        assert "/auth/authorize" in await page.evaluate("location.pathname")
        await page.evaluate("deep('input[name=username]')[0].focus()")
        await page.insert_text("hems")
        await page.evaluate("deep('input[type=password]')[0].focus()")
        await page.insert_text(stack.secret("ha_password"))
        await page.evaluate("deep('mwc-button').find((b) => /log in/i.test(b.textContent)).click()")
        # logged in: back on /energy with the dashboard's cards drawn
        await page.wait_for(
            f"({DEEP}, location.pathname === '/energy' && deep('hui-energy-distribution-card').length > 0)"
        )
        # the frontend holds our meters' states, and the sources table names them
        power = await page.evaluate("document.querySelector('home-assistant').hass.states['sensor.hems_grid_power']")
        assert power is not None
        assert power["attributes"]["unit_of_measurement"] == "W"
        table = await page.wait_for(
            "deep('hui-energy-sources-table-card').map((c) => c.shadowRoot.textContent).join(' ')"
        )
        for name in ("Grid Energy import", "Grid Energy export", "Solar Energy export"):
            assert name in table, table
        shot = await page.screenshot()
    (tmp_path / "energy-dashboard.png").write_bytes(shot)
    assert shot.startswith(b"\x89PNG")
    if os.environ.get("HEMS_UPDATE_SCREENSHOTS") == "1":
        (REPO / "docs" / "screenshots" / "energy-dashboard.png").write_bytes(shot)
