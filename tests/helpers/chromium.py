"""Debian's headless Chromium driven over the Chrome DevTools Protocol (CDP) with aiohttp.

Playwright's browser download cannot run here and Debian's chromium is enough: it is started
with --remote-debugging-port on 127.0.0.1, a fresh profile, and every background feature that
would reach the network turned off. The API:

    async with Chromium(tmp_path) as browser:
        page = await browser.new_page()
        await page.navigate("https://127.0.0.1:8443/")
        await page.evaluate("document.title")
        png = await page.screenshot()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from .net import free_port, stop_process, wait_for_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    # the demo's certificate is self-signed
    "--ignore-certificate-errors",
    "--window-size=1400,1000",
]


class Page:
    """One tab: CDP commands over its own websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def send(self, method: str, timeout: float = 30.0, **params: Any) -> Any:
        """Send a CDP command; its `result`. AssertionError on a CDP error."""
        msg_id = next(self._ids)
        await self._ws.send_json({"id": msg_id, "method": method, "params": params})
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads((await self._ws.receive()).data)
                if message.get("id") == msg_id:
                    assert "error" not in message, f"{method}: {message['error']}"
                    return message.get("result")

    async def navigate(self, url: str) -> None:
        """Open `url` (returns when the navigation is committed, not when the app is drawn)."""
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        """Run JavaScript in the page (promises awaited); the value as JSON."""
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Evaluate `expression` until it is truthy; its value. TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(AssertionError):
                    value = await self.evaluate(expression)
                    if value:
                        return value
                await asyncio.sleep(0.5)

    async def insert_text(self, text: str) -> None:
        """Type `text` into the focused element (real input events)."""
        await self.send("Input.insertText", text=text)

    async def screenshot(self) -> bytes:
        """A PNG of the viewport."""
        result = await self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(result["data"])


class Chromium:
    """A headless Chromium with a fresh profile in `workdir`, stopped on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Chromium:
        profile = self.workdir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "chromium.log").open("wb")
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                f"--remote-debugging-port={self.port}",
                "about:blank",
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        wait_for_port(self.port, timeout=60)
        self._session = aiohttp.ClientSession()
        return self

    async def new_page(self) -> Page:
        """Open a tab and connect to it."""
        assert self._session is not None
        async with self._session.put(f"http://127.0.0.1:{self.port}/json/new?about:blank") as response:
            target = await response.json()
        ws = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        return page

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
        if self.process is not None:
            stop_process(self.process)
