"""Ports, waiting for servers, stopping them."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator

from aiohttp import web


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    """Block until something accepts TCP connections on `host:port`; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """Serve `app` on 127.0.0.1:`port` (0: a free one) until the block ends; yields the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def stop_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop a server process: SIGTERM, then SIGKILL after `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
