"""Building aiomqtt clients from the bridge's MQTT settings, in one place.

Every part of the bridge that talks MQTT (the HA sink, MQTT-based sources, flex)
opens its own client through `make_client`, with its own client id, so a slow
subscriber never holds up a publisher.

The client is aiomqtt's, with five changes to how it drives paho's socket
(`BridgeMqttClient`); each was measured with `tests/bench/bench_ingest.py` and each
is covered by `tests/integration/test_mqtt_transport.py`:

- **Back-pressure instead of discards.** aiomqtt either queues without bound or, with
  a bound, discards what does not fit. Neither is acceptable for meter data, so the
  incoming queue is unbounded but the client stops reading the socket while
  `MAX_QUEUED_INCOMING` messages wait, and reads on once half have been taken. A
  burst then waits in the kernel's and the broker's buffers (the release raises
  Mosquitto's `max_queued_messages` for this), memory stays bounded and nothing is
  dropped by the bridge.
- **Buffered reads.** paho reads each packet with three or more `recv()` calls (one byte
  of command, one per length byte, then the body). The socket is wrapped so that one
  `recv()` of up to 64 KiB serves many packets; aiomqtt's reader already loops while
  the socket reports `pending()` bytes (it does so for TLS), and the wrapper reports its
  buffer that way.
- **No task per message.** aiomqtt's `messages` iterator starts a task and an
  `asyncio.wait` for every message, even when the queue holds thousands. Here a queued
  message is returned at once (yielding to the loop every `FAIRNESS_BATCH` messages),
  and an empty queue is waited on with one future.
- **Waiting for acknowledgements.** aiomqtt waits with `asyncio.wait_for`, which on
  Python 3.11 can swallow a task's cancellation when the acknowledgement arrives at the
  same moment (the task then runs on and shutdown hangs), starts a task per wait, and
  waits out the whole timeout when the connection is lost meanwhile. Here the wait uses
  `asyncio.timeout` and ends with `MqttError` as soon as the connection is gone.
- **Direct writes.** aiomqtt registers a writer with the event loop for every packet
  paho queues (a thread-safe call, a loop iteration, two `epoll_ctl`s) and makes every
  QoS 0 publish wait on an event. When the loop's own thread queues a packet, the client
  writes it at once; only what the socket does not take waits for the writer.

These hooks use aiomqtt's and paho's internals (`_on_socket_open`, `_client._sock`),
hence the narrow aiomqtt pin in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiomqtt
import paho.mqtt.client as paho

from .sections import MqttConfig

T = TypeVar("T")

#: Incoming messages waiting in a client's queue at which it stops reading the socket.
MAX_QUEUED_INCOMING = 10_000
#: Bytes asked of the kernel per read of the broker's socket.
RECV_SIZE = 65_536

#: Messages the iterator hands out back to back before it lets other tasks run.
FAIRNESS_BATCH = 64

#: The logger every MQTT client of the bridge uses.
MQTT_LOGGER = logging.getLogger("meterbridge.mqtt.client")


class ReaderStats:
    """Back-pressure counters of every client of this process (for `/metrics`)."""

    def __init__(self) -> None:
        self.pauses = 0


READER_STATS = ReaderStats()


def endpoint(config: MqttConfig) -> str:
    """`host:port` of the broker, for log messages."""
    return f"{config.host}:{config.port}"


class BufferedSocket:
    """A plain TCP socket whose `recv` serves paho's small reads from one large read.

    Everything but `recv` and `pending` is the wrapped socket's.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        """Up to `bufsize` bytes; raises `BlockingIOError` like the socket when nothing is there."""
        if self._pos >= len(self._buffer):
            self._buffer = self._sock.recv(RECV_SIZE)  # b"": the broker closed the connection
            self._pos = 0
        chunk = self._buffer[self._pos : self._pos + bufsize]
        self._pos += len(chunk)
        return chunk

    def pending(self) -> int:
        """Bytes read from the kernel and not yet handed to paho."""
        return len(self._buffer) - self._pos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class IncomingQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's incoming queue, unbounded, telling its client when it is too full or drained."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(0)  # never full: the client stops reading instead
        self.high_water = maxsize or MAX_QUEUED_INCOMING
        self.low_water = self.high_water // 2
        self.on_high: Callable[[], None] | None = None
        self.on_low: Callable[[], None] | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def wait_not_empty(self, disconnected: asyncio.Future[None]) -> None:
        """Return once a message is queued or `disconnected` is done."""
        loop = asyncio.get_running_loop()
        while self.empty() and not disconnected.done():
            waiter = self._waiter = loop.create_future()

            def wake(_: object, waiter: asyncio.Future[None] = waiter) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            disconnected.add_done_callback(wake)
            try:
                await waiter
            finally:
                disconnected.remove_done_callback(wake)
                self._waiter = None

    def put_nowait(self, item: aiomqtt.Message) -> None:
        """Queue `item`; past the high-water mark, tell the client to stop reading."""
        super().put_nowait(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.on_high is not None and self.qsize() >= self.high_water:
            self.on_high()

    def get_nowait(self) -> aiomqtt.Message:
        """Take the oldest message; at the low-water mark, tell the client to read again."""
        item = super().get_nowait()
        if self.on_low is not None and self.qsize() <= self.low_water:
            self.on_low()
        return item


class QueuedMessages(aiomqtt.client.MessagesIterator):
    """`client.messages` without a task per message (see the module docstring)."""

    def __init__(self, client: BridgeMqttClient) -> None:
        super().__init__(client)
        self._bridge_client = client  # `self._client`, typed as ours
        self._back_to_back = 0

    async def __anext__(self) -> aiomqtt.Message:
        """The next message; raises `MqttError` once the connection is gone."""
        if self._back_to_back >= FAIRNESS_BATCH:
            self._back_to_back = 0
            await asyncio.sleep(0)
        incoming = self._bridge_client.incoming
        if incoming.empty():
            self._back_to_back = 0
            disconnected = self._bridge_client.disconnected_future
            await incoming.wait_not_empty(disconnected)
            if incoming.empty():
                raise aiomqtt.MqttError("Disconnected during message iteration") from disconnected.exception()
        self._back_to_back += 1
        return incoming.get_nowait()


class BridgeMqttClient(aiomqtt.Client):
    """aiomqtt's client with back-pressure, buffered reads and direct writes (see the module)."""

    def __init__(self, *args: Any, max_queued_incoming_messages: int = MAX_QUEUED_INCOMING, **kwargs: Any) -> None:
        super().__init__(
            *args, queue_type=IncomingQueue, max_queued_incoming_messages=max_queued_incoming_messages, **kwargs
        )
        self._thread_id = threading.get_ident()
        self._reader_fd: int | None = None
        self.reading_paused = False
        incoming = self._queue
        if not isinstance(incoming, IncomingQueue):  # aiomqtt no longer builds its queue from `queue_type`
            raise TypeError(f"unexpected aiomqtt incoming queue {type(incoming).__name__}")
        incoming.on_high, incoming.on_low = self._pause_reading, self._resume_reading
        self.incoming = incoming

    @property
    def messages(self) -> aiomqtt.client.MessagesIterator:
        """The incoming messages, as aiomqtt's iterator but without a task per message."""
        return QueuedMessages(self)

    @property
    def disconnected_future(self) -> asyncio.Future[None]:
        """aiomqtt's future of the current connection's end (it is replaced on every connect)."""
        return self._disconnected

    async def _wait_for(self, fut: Awaitable[T], timeout: float | None) -> T:
        if timeout is None:
            timeout = self.timeout
        disconnected = self._disconnected
        # An acknowledgement (PUBACK, SUBACK...) never comes once the connection is gone:
        # end such a wait then (aiomqtt would wait out the whole timeout). Connecting and
        # disconnecting wait on the connection's own futures, as in aiomqtt.
        watch = fut is not disconnected and fut is not self._connected
        if watch and disconnected.done():
            if inspect.iscoroutine(fut):
                fut.close()  # never awaited: say so to the coroutine, not to the log
            raise aiomqtt.MqttError("Connection lost before the broker acknowledged")
        task = asyncio.current_task()
        lost = False

        def on_lost(ended: asyncio.Future[None]) -> None:
            nonlocal lost
            if not ended.cancelled():
                ended.exception()  # seen here: asyncio need not log it as never retrieved
            if task is not None and not task.done():
                lost = True
                task.cancel()

        if watch:
            disconnected.add_done_callback(on_lost)
        try:
            async with asyncio.timeout(None if math.isinf(timeout) else timeout):
                result: T = await fut
                return result
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None
        except asyncio.CancelledError:
            if lost and task is not None and task.uncancel() == 0:
                raise aiomqtt.MqttError("Connection lost before the broker acknowledged") from None
            raise
        finally:
            if watch:
                disconnected.remove_done_callback(on_lost)

    def _connection_broken(self, exc: Exception) -> None:
        if not self._disconnected.done():
            self._disconnected.set_exception(exc)

    # -- reading ------------------------------------------------------------------------------

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # Called by paho in the executor thread that connects; the loop's work is handed over.
        if type(sock) is socket.socket:
            client._sock = BufferedSocket(sock)  # private: see the module docstring
        fd = sock.fileno()

        def start() -> None:
            self._reader_fd = fd
            if not self.reading_paused:
                self._loop.add_reader(fd, self._read)
            self._misc_task = self._loop.create_task(self._misc_loop())

        self._loop.call_soon_threadsafe(start)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._reader_fd = None
        super()._on_socket_close(client, userdata, sock)

    def _read(self) -> None:
        client = self._client
        try:
            while not self.reading_paused:
                client.loop_read()
                sock: Any = client._sock  # private: see the module docstring
                if sock is None or not isinstance(sock, BufferedSocket | ssl.SSLSocket) or sock.pending() <= 0:
                    break
        except Exception as exc:  # as aiomqtt: a broken connection ends the client
            self._connection_broken(exc)

    def _pause_reading(self) -> None:
        if self.reading_paused:
            return
        self.reading_paused = True
        READER_STATS.pauses += 1
        if self._reader_fd is not None:
            self._loop.remove_reader(self._reader_fd)

    def _resume_reading(self) -> None:
        if not self.reading_paused:
            return
        self.reading_paused = False
        if self._reader_fd is not None:
            self._loop.add_reader(self._reader_fd, self._read)
            self._loop.call_soon(self._read)  # what the buffer already holds raises no event

    # -- writing ------------------------------------------------------------------------------

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        mutex = client._in_callback_mutex  # paho's own guard for direct writes
        if threading.get_ident() == self._thread_id and mutex.acquire(blocking=False):
            mutex.release()
            try:
                client.loop_write()
            except Exception as exc:  # as aiomqtt's writer
                self._connection_broken(exc)
                return
            if not client.want_write():
                return
        super()._on_socket_register_write(client, userdata, sock)


def make_client(config: MqttConfig, client_id: str, will: aiomqtt.Will | None = None) -> aiomqtt.Client:
    """An unconnected client for the configured broker (use it with `async with`)."""
    tls_context = None
    if config.tls.enabled:
        tls_context = ssl.create_default_context(cafile=str(config.tls.ca_file) if config.tls.ca_file else None)
        if config.tls.insecure:
            tls_context.check_hostname = False
    return BridgeMqttClient(
        hostname=config.host,
        port=config.port,
        username=config.username,
        password=config.password.get_secret_value(),
        identifier=client_id,
        keepalive=config.keepalive_s,
        will=will,
        tls_context=tls_context,
        timeout=10,
        logger=MQTT_LOGGER,
    )
