"""Starting emulated Kasa plugs on loopback for tests."""

from __future__ import annotations

import socket
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
