"""Onboard a fresh Home Assistant without a browser and get a long-lived access token.

Used by `make demo` (scripts/demo.sh) and by the tests' Home Assistant helper
(tests/helpers/homeassistant.py imports this module). Only loopback URLs are expected.

    python scripts/ha_onboard.py --mark-other-steps-done --config-dir .demo/ha   # before the 1st start
    python scripts/ha_onboard.py --url http://127.0.0.1:8123 --username hems \\
        --password-file .demo/ha_password --token-file .demo/ha_token

The owner is created through the onboarding API (which hands out an auth code), the code is
traded for an access token, and the websocket makes a long-lived token of it. The other
onboarding steps (core_config, analytics, integration) are marked done in HA's onboarding store
before the first start (`mark_other_steps_done`), because the core_config step sets up weather
and radio integrations that reach the internet; without them done the frontend would keep
showing the onboarding wizard.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

#: Home Assistant's onboarding store (homeassistant/components/onboarding, STORAGE_VERSION 4 in
#: 2024.3 and current releases).
ONBOARDING_STORE = {"version": 4, "minor_version": 1, "key": "onboarding"}
OTHER_STEPS = ["core_config", "analytics", "integration"]


def mark_other_steps_done(config_dir: Path) -> bool:
    """Write the onboarding store with every step but `user` done; False when one exists already."""
    path = config_dir / ".storage" / "onboarding"
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**ONBOARDING_STORE, "data": {"done": OTHER_STEPS}}))
    return True


def wait_for_onboarding(url: str, timeout_s: float, alive: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
    """Poll `GET /api/onboarding` until HA answers; its steps. RuntimeError on timeout or death."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError("Home Assistant exited while starting")
        try:
            with urllib.request.urlopen(f"{url}/api/onboarding", timeout=2) as response:  # noqa: S310 - loopback
                steps: list[dict[str, Any]] = json.load(response)
                return steps
        except (OSError, ValueError):
            time.sleep(0.2)
    raise RuntimeError(f"Home Assistant did not answer on {url} in {timeout_s:.0f} s")


def user_step_pending(steps: list[dict[str, Any]]) -> bool:
    """True while the owner has not been created."""
    return any(step["step"] == "user" and not step["done"] for step in steps)


def _post(url: str, body: bytes, content_type: str) -> Any:
    request = urllib.request.Request(  # noqa: S310 - our own local URL
        url, data=body, headers={"Content-Type": content_type}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.load(response)


def create_owner(url: str, username: str, password: str, name: str = "Admin") -> str:
    """Create the owner through the onboarding API; a short-lived access token of that user."""
    client_id = f"{url}/"
    user = {"client_id": client_id, "name": name, "username": username, "password": password, "language": "en"}
    answer = _post(f"{url}/api/onboarding/users", json.dumps(user).encode(), "application/json")
    form = urllib.parse.urlencode(
        {"grant_type": "authorization_code", "code": answer["auth_code"], "client_id": client_id}
    ).encode()
    tokens = _post(f"{url}/auth/token", form, "application/x-www-form-urlencoded")
    access_token: str = tokens["access_token"]
    return access_token


async def long_lived_token(url: str, access_token: str, client_name: str) -> str:
    """Trade an access token for a long-lived one (10 years) over the websocket API."""
    ws_url = url.replace("http", "ws", 1) + "/api/websocket"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        hello = await ws.receive_json()
        if hello.get("type") != "auth_required":
            raise RuntimeError(f"unexpected websocket greeting: {hello}")
        await ws.send_json({"type": "auth", "access_token": access_token})
        answer = await ws.receive_json()
        if answer.get("type") != "auth_ok":
            raise RuntimeError(f"websocket authentication failed: {answer.get('type')}")
        await ws.send_json(
            {"id": 1, "type": "auth/long_lived_access_token", "client_name": client_name, "lifespan": 3650}
        )
        result = await ws.receive_json()
        if not result.get("success"):
            raise RuntimeError(f"no long-lived token: {result.get('error')}")
        token: str = result["result"]
        return token


def onboard(url: str, username: str, password: str, client_name: str) -> str:
    """Create the owner and return a long-lived access token (synchronous; own event loop)."""
    access_token = create_owner(url, username, password)
    return asyncio.run(long_lived_token(url, access_token, client_name))


def main(argv: list[str] | None = None) -> int:
    """CLI: wait for HA, onboard it once, keep the long-lived token in `--token-file` (0600)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="Home Assistant base URL (loopback)")
    parser.add_argument("--username", default="hems")
    parser.add_argument("--password-file", type=Path, help="the owner's password (read)")
    parser.add_argument("--token-file", type=Path, help="where the long-lived token is kept")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for HA to answer")
    parser.add_argument(
        "--mark-other-steps-done", action="store_true", help="before the first start: only seed the onboarding store"
    )
    parser.add_argument("--config-dir", type=Path, help="HA's config dir (with --mark-other-steps-done)")
    args = parser.parse_args(argv)
    if args.mark_other_steps_done:
        if args.config_dir is None:
            parser.error("--mark-other-steps-done needs --config-dir")
        mark_other_steps_done(args.config_dir)
        return 0
    if args.url is None or args.password_file is None or args.token_file is None:
        parser.error("--url, --password-file and --token-file are required")
    steps = wait_for_onboarding(args.url, args.timeout)
    if not user_step_pending(steps):
        if not args.token_file.exists():
            print(f"ha_onboard: {args.url} is onboarded but {args.token_file} is missing", file=sys.stderr)
            return 1
        return 0
    token = onboard(args.url, args.username, args.password_file.read_text().strip(), "hems-demo")
    fd = os.open(args.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
