"""Starting emulated Kasa plugs on loopback for tests."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterable
from typing import Any

from meterbridge.sinks.kasa.config import KasaConfig, KasaPlugConfig
from meterbridge.sinks.kasa.sink import KasaSink


def _port_free(port: int, hosts: Iterable[str]) -> bool:
    for host in hosts:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    return False
    return True


async def started_sink(plugs: list[dict[str, Any]], bind: str = "127.0.0.1", **settings: Any) -> KasaSink:
    """A started `KasaSink` with `plugs` on a port free (UDP and TCP) on every address it uses."""
    hosts = [bind, *(p["address"] for p in plugs if p.get("address"))]
    last: OSError | None = None
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if not _port_free(port, hosts):
            continue
        config = KasaConfig(enabled=True, bind=bind, port=port, plugs=[KasaPlugConfig(**p) for p in plugs], **settings)
        sink = KasaSink(config)
        try:
            await sink.start()
        except OSError as err:  # taken between the probe and the bind: try another
            last = err
            continue
        return sink
    raise RuntimeError(f"no free port for the Kasa plugs: {last}")


class ThreadedPlugs:
    """A `KasaSink` serving from its own event loop in a thread, for blocking-socket tests."""

    def __init__(self, plugs: list[dict[str, Any]], readings: list[Any], **settings: Any) -> None:
        self._plugs = plugs
        self._readings = readings
        self._settings = settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="kasa-plugs", daemon=True)
        self.sink: KasaSink | None = None

    def __enter__(self) -> ThreadedPlugs:
        self._thread.start()
        self.sink = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    async def _start(self) -> KasaSink:
        sink = await started_sink(self._plugs, **self._settings)
        await sink.handle(self._readings)
        return sink

    def __exit__(self, *exc: object) -> None:
        if self.sink is not None:
            asyncio.run_coroutine_threadsafe(self.sink.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @property
    def port(self) -> int:
        """The plugs' UDP and TCP port."""
        assert self.sink is not None
        return self.sink.config.port
