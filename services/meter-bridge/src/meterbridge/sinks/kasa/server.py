"""UDP and TCP servers of the emulated plugs (asyncio; the protocol itself is in `protocol`).

UDP: a query on the shared socket (`bind:port`, which receives Sense's broadcasts) is
answered with one datagram per exposed plug, unicast to the sender; a plug with its own
`address` answers from a socket bound to that address, so the reply's source is the
plug's IP (python-kasa keys devices by source IP) and port `port` (python-kasa drops
replies from any other port). A query sent to a plug's own address gets that plug only.

TCP: the length-prefixed protocol python-kasa and Home Assistant use after discovery.
The plug is chosen by the local address the client connected to: the plug with that
`address`, else the first exposed plug without one.

Hostile input is cheap to survive: garbage is counted and dropped; UDP queries beyond
`max_queries_per_s` are dropped (a 40-byte query can trigger kilobytes of replies); a
reply is dropped when the socket's send buffer is backed up; TCP connections are capped
in number, message size and idle time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import cast

from ...errors import ParseError
from ...logutil import RateLimitedLog
from ...stats import SinkStats
from .config import KasaConfig, KasaPlugConfig
from .plugs import PlugBook
from .protocol import FrameDecoder, Response, decrypt, encrypt, frame, parse_request, respond

_LOGGER = logging.getLogger(__name__)

#: Bytes queued on a UDP socket beyond which replies are dropped.
MAX_UDP_BACKLOG = 256 * 1024
#: Concurrent TCP connections served; more are closed at once.
MAX_TCP_CONNECTIONS = 32
#: A TCP connection with no complete request for this long is closed.
TCP_IDLE_TIMEOUT_S = 60.0
#: Largest UDP query considered (real ones are under 100 bytes).
MAX_QUERY_BYTES = 4096

_WILDCARDS = frozenset({"0.0.0.0", ""})  # noqa: S104 - the check, not a bind


class _TokenBucket:
    """At most `rate` events per second, with bursts up to `rate`."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._clock = clock
        self._tokens = rate
        self._last = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class _UdpEndpoint(asyncio.DatagramProtocol):
    """One UDP socket; `plug` None for the shared socket (answers for every exposed plug)."""

    def __init__(self, server: KasaServer, plug: KasaPlugConfig | None) -> None:
        self.server = server
        self.plug = plug
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        try:
            self.server.on_query(self, data, (str(addr[0]), int(str(addr[1]))))
        except Exception as err:  # a bug must never close the socket
            self.server.count("udp_internal", "Kasa UDP query from %s failed: %r", addr[0], err)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable after a reply to a client that left: not our problem.
        _LOGGER.debug("Kasa UDP socket error: %r", exc)

    def send(self, payload: bytes, addr: tuple[str, int]) -> bool:
        """Send unless the socket is backed up; False when dropped."""
        if self.transport is None or self.transport.is_closing():
            return False
        # Selector transports queue what the kernel would not take; the ABC does not
        # declare the method, hence getattr.
        backlog = getattr(self.transport, "get_write_buffer_size", lambda: 0)()
        if int(backlog) > MAX_UDP_BACKLOG:
            return False
        self.transport.sendto(payload, addr)
        return True


def _udp_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # SO_REUSEADDR lets plug sockets on their own addresses share the port with a
        # wildcard socket; SO_BROADCAST lets the wildcard one receive Sense's broadcasts.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class KasaServer:
    """Serves the plugs of `book` on UDP and TCP `config.port`; see the module docstring.

    `start` raises `OSError` when a socket cannot be bound (address in use, address not
    on this host).
    """

    def __init__(
        self,
        config: KasaConfig,
        book: PlugBook,
        stats: SinkStats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._book = book
        self._stats = stats
        self._clock = clock
        self._log = RateLimitedLog(_LOGGER)
        self._bucket = _TokenBucket(config.max_queries_per_s, clock)
        self._shared: _UdpEndpoint | None = None
        self._plug_udp: dict[str, _UdpEndpoint] = {}
        self._tcp_servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._by_address = {plug.address: plug for plug in book.exposed if plug.address is not None}
        self._default = next((plug for plug in book.exposed if plug.address is None), None)

    # -- bookkeeping ------------------------------------------------------------------

    def count(self, kind: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        """Count an error of `kind` in the sink's stats and log it, rate-limited."""
        self._stats.errors[kind] += 1
        self._log.log(level, kind, message, *args)

    def _note(self, response: Response, peer: str) -> None:
        if response.refused:
            self.count("refused", "Kasa: refused %s from %s: the plugs are read-only", response.refused, peer)
        if response.unknown:
            self._stats.errors["unsupported"] += 1

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every socket and start serving."""
        loop = asyncio.get_running_loop()
        cfg = self._config
        try:
            _t, self._shared = await loop.create_datagram_endpoint(
                lambda: _UdpEndpoint(self, None), sock=_udp_socket(cfg.bind, cfg.port)
            )
            for address, plug in self._by_address.items():
                _t, endpoint = await loop.create_datagram_endpoint(
                    functools.partial(_UdpEndpoint, self, plug), sock=_udp_socket(address, cfg.port)
                )
                self._plug_udp[plug.id] = endpoint
            hosts = [cfg.bind]
            if cfg.bind not in _WILDCARDS:
                hosts += [a for a in self._by_address if a != cfg.bind]
            for host in hosts:
                self._tcp_servers.append(
                    await asyncio.start_server(self._serve_tcp, host, cfg.port, reuse_address=True, backlog=16)
                )
        except OSError:
            await self.close()
            raise
        _LOGGER.info(
            "Kasa: %d plugs on %s:%d (UDP+TCP)%s",
            len(self._book.exposed),
            cfg.bind,
            cfg.port,
            f", own addresses {', '.join(self._by_address)}" if self._by_address else "",
        )

    async def close(self) -> None:
        """Close every socket and connection."""
        for endpoint in [self._shared, *self._plug_udp.values()]:
            if endpoint is not None and endpoint.transport is not None:
                endpoint.transport.close()
        self._shared = None
        self._plug_udp.clear()
        for server in self._tcp_servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in self._tcp_servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._tcp_servers.clear()

    # -- UDP --------------------------------------------------------------------------

    def on_query(self, endpoint: _UdpEndpoint, data: bytes, peer: tuple[str, int]) -> None:
        """Answer one UDP query (called by the endpoint's protocol)."""
        self._stats.gauges["udp_queries"] = self._stats.gauges.get("udp_queries", 0) + 1
        if not self._bucket.take():
            self._stats.errors["udp_rate_limited"] += 1
            return
        if len(data) > MAX_QUERY_BYTES:
            self.count("udp_garbage", "Kasa: dropped a %d-byte UDP datagram from %s", len(data), peer[0])
            return
        try:
            request = parse_request(decrypt(data))
        except ParseError as err:
            self.count("udp_garbage", "Kasa: unreadable UDP query from %s: %s", peer[0], err)
            return
        plugs = [endpoint.plug] if endpoint.plug is not None else self._book.exposed
        now = self._clock()
        for plug in plugs:
            snapshot = self._book.snapshot(plug.id, now)
            if snapshot is None:
                continue  # no data yet: silent, like an unplugged plug
            response = respond(request, snapshot)
            self._note(response, peer[0])
            sender = self._plug_udp.get(plug.id) or self._shared
            if sender is None or not sender.send(encrypt(response.encode()), peer):
                self._stats.errors["udp_backlog"] += 1

    # -- TCP --------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._connections) >= MAX_TCP_CONNECTIONS:
            self.count(
                "tcp_busy", "Kasa: too many TCP connections, closing one from %s", writer.get_extra_info("peername")
            )
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._converse(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or idled: nothing to report
        finally:
            self._connections.discard(task)
            writer.close()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        local = writer.get_extra_info("sockname")
        peer = writer.get_extra_info("peername")
        peer_host = str(peer[0]) if peer else "?"
        plug = self._by_address.get(str(local[0])) if local else None
        plug = plug or self._default
        if plug is None:
            return
        decoder = FrameDecoder()
        while True:
            async with asyncio.timeout(TCP_IDLE_TIMEOUT_S):
                data = await reader.read(4096)
            if not data:
                return
            try:
                messages = decoder.feed(data)
            except ParseError as err:
                self.count("tcp_garbage", "Kasa: closing TCP connection from %s: %s", peer_host, err)
                return
            for message in messages:
                try:
                    request = parse_request(message)
                except ParseError as err:
                    self.count("tcp_garbage", "Kasa: unreadable TCP request from %s: %s", peer_host, err)
                    continue
                snapshot = self._book.snapshot(plug.id, self._clock())
                if snapshot is None:
                    return  # no data yet: the client sees the plug as unreachable
                response = respond(request, snapshot)
                self._note(response, peer_host)
                writer.write(frame(response.encode()))
                await writer.drain()
