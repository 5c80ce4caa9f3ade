"""The bridge's MQTT transport: a small MQTT 3.1.1 client on an asyncio protocol.

Every part of the bridge that talks MQTT (the HA sink, MQTT-based sources, flex, the Shelly
tools) opens its own connection through `make_client`, with its own client id, so a slow
subscriber never holds up a publisher. Callers see only `MqttClient` (publish, subscribe,
unsubscribe, `messages`), `Message`, `Will` and our errors (`BrokerError`, `BrokerAuthError`):
no library type crosses this module's boundary.

Why our own client rather than aiomqtt (issue 19; measured with `tests/bench/bench_ingest.py`,
see docs/benchmarks.md). The bridge ingests bursts of small QoS 0 messages and must lose none,
with bounded memory, which stock aiomqtt 2.5 (the latest release) cannot do:

- **Back-pressure instead of discards.** aiomqtt either queues without bound or, with a bound,
  discards what does not fit; its public API has no way to stop reading the socket. Here the
  incoming queue stops the reading (`asyncio.Transport.pause_reading`, the event loop's own flow
  control) while `MAX_QUEUED_INCOMING` messages wait, and reads on once half have been taken.
  A burst then waits in the kernel's and the broker's buffers (the release raises Mosquitto's
  `max_queued_messages` for this); nothing is dropped by the bridge.
- **One read, many packets.** paho (under aiomqtt) reads each packet with three or more
  `recv()` calls; here one `data_received` of up to 256 KiB is cut into all the packets it holds.
- **No task per message.** aiomqtt's `messages` iterator starts a task and an `asyncio.wait`
  per message; here a queued message is returned at once (yielding to the loop every
  `FAIRNESS_BATCH` messages) and an empty queue is waited on with one future.
- **Direct writes.** A packet goes to `transport.write`, which sends at once when the socket
  takes it (a QoS 0 publish is on the wire when `publish` returns) and buffers the rest; a
  publisher waits only when that buffer passes its high-water mark (`pause_writing`).
- **Acknowledgements end with the connection.** A wait for PUBACK/SUBACK/UNSUBACK uses
  `asyncio.timeout` (not `wait_for`, which can swallow a cancellation on Python 3.11) and ends
  with `BrokerError` as soon as the connection is lost, not after the whole timeout.

The earlier version reached these by overriding aiomqtt's and paho's private methods, which
pinned aiomqtt to one minor release. MQTT 3.1.1 (OASIS standard, 2014) is small: CONNECT with
user, password and last will, PUBLISH QoS 0/1 both ways (QoS 2 received is acknowledged),
SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT. Everything here is tested against a real Mosquitto
with authentication (`tests/integration/test_mqtt_transport.py`), with aiomqtt as the
independent peer in the tests.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, cast

from .errors import BrokerAuthError, BrokerError
from .sections import MqttConfig

#: Incoming messages waiting in a connection's queue at which it stops reading the socket.
MAX_QUEUED_INCOMING = 10_000
#: Messages the iterator hands out back to back before it lets other tasks run.
FAIRNESS_BATCH = 64
#: Seconds a connect, or a wait for an acknowledgement, may take.
TIMEOUT_S = 10.0

#: The logger of every MQTT connection of the bridge.
MQTT_LOGGER = logging.getLogger("meterbridge.mqtt.client")

Payload = bytes | bytearray | str

# MQTT 3.1.1 control packet types (section 2.2.1), as the first byte's high nibble.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
PINGREQ_PACKET, DISCONNECT_PACKET = b"\xc0\x00", b"\xe0\x00"

#: CONNACK return codes (section 3.2.2.3); 4 and 5 refuse the credentials.
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
CONNACK_AUTH_REFUSED = frozenset({4, 5})


class ReaderStats:
    """Back-pressure counters of every connection of this process (for `/metrics`)."""

    def __init__(self) -> None:
        self.pauses = 0


READER_STATS = ReaderStats()


def endpoint(config: MqttConfig) -> str:
    """`host:port` of the broker, for log messages."""
    return f"{config.host}:{config.port}"


@dataclass(frozen=True, slots=True)
class Will:
    """The last will the broker publishes when the connection ends without a DISCONNECT."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False


class Message:
    """A PUBLISH received: topic, payload (always bytes), QoS and the retain flag."""

    __slots__ = ("payload", "qos", "retain", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain

    def __repr__(self) -> str:
        return f"Message({self.topic!r}, {self.payload[:40]!r}, qos={self.qos}, retain={self.retain})"


class Messages(Protocol):
    """The incoming messages of a connection; iteration ends with `BrokerError` when it is lost."""

    def __aiter__(self) -> AsyncIterator[Message]: ...

    def __len__(self) -> int: ...


class MqttClient(Protocol):
    """What the rest of the bridge uses of an MQTT connection (see the module docstring)."""

    async def publish(self, topic: str, payload: Payload = b"", qos: int = 0, retain: bool = False) -> None:
        """Send a message; QoS 0 returns once it is written, QoS 1 once the broker acknowledged it."""

    async def subscribe(self, topic: str, qos: int = 0) -> None:
        """Subscribe to a topic filter; returns once the broker granted it."""

    async def unsubscribe(self, topic: str) -> None:
        """Drop a subscription; returns once the broker acknowledged it."""

    @property
    def messages(self) -> Messages:
        """The messages the subscriptions bring, in arrival order."""


def _length(n: int) -> bytes:
    """The remaining-length field (section 2.2.3)."""
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    if len(data) > 0xFFFF:
        raise ValueError("MQTT strings are at most 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _length(len(body)) + body


def _as_bytes(payload: Payload | None) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, str):
        return payload.encode()
    return bytes(payload)


def connect_packet(
    client_id: str, keepalive_s: int, username: str | None, password: str | None, will: Will | None
) -> bytes:
    """CONNECT, clean session (section 3.1)."""
    flags = 0x02
    payload = _string(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _string(will.topic) + _string(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    return _packet(CONNECT << 4, _string("MQTT") + bytes((4, flags)) + keepalive_s.to_bytes(2, "big") + payload)


class _Incoming:
    """The queue of received messages and its flow control (the `messages` of a connection)."""

    def __init__(self, connection: BrokerConnection, high_water: int) -> None:
        self._connection = connection
        self._queue: collections.deque[Message] = collections.deque()
        self.high_water = high_water
        self.low_water = high_water // 2
        #: One future per iterating task (aiomqtt lets several tasks iterate one client; so do we).
        self._waiters: list[asyncio.Future[None]] = []
        self._back_to_back = 0

    def __len__(self) -> int:
        return len(self._queue)

    def __aiter__(self) -> _Incoming:
        return self

    async def __anext__(self) -> Message:
        """The next message; raises `BrokerError` once the connection is gone and the queue empty."""
        queue = self._queue
        if self._back_to_back >= FAIRNESS_BATCH:
            self._back_to_back = 0
            await asyncio.sleep(0)
        while not queue:
            self._back_to_back = 0
            error = self._connection.lost_error
            if error is not None:
                raise error
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self._back_to_back += 1
        message = queue.popleft()
        if len(queue) <= self.low_water:
            self._connection.resume_reading()
        return message

    def put(self, message: Message) -> None:
        queue = self._queue
        queue.append(message)
        if len(queue) >= self.high_water:
            self._connection.pause_reading()

    def wake(self) -> None:
        """Tell the waiting iterators that something happened (messages arrived, or the end)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class _Wire(asyncio.Protocol):
    """The asyncio protocol under a connection: cuts the byte stream into packets."""

    def __init__(self, connection: BrokerConnection) -> None:
        self._connection = connection
        self._rest = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connection.transport = cast(asyncio.Transport, transport)  # create_connection's: a stream

    def data_received(self, data: bytes) -> None:
        self._rest = self._rest + data if self._rest else data
        self._connection.last_received = time.monotonic()
        self.parse()

    def parse(self) -> None:
        """Cut what was received into packets, until it runs out or the queue stops the reading.

        What is left waits here (at most one read, 256 KiB) until `resume_reading` calls this again.
        """
        data = self._rest
        connection = self._connection
        incoming = connection.incoming
        put = incoming.put
        size = len(data)
        pos = 0
        arrived = False
        while size - pos >= 2 and not connection.reading_paused:
            first = data[pos]
            # remaining length: up to four bytes, seven bits each (section 2.2.3)
            index = pos + 1
            length = data[index] & 0x7F
            shift = 7
            while data[index] & 0x80:
                index += 1
                if index >= size:
                    break
                if shift > 21:
                    connection.protocol_error("malformed remaining length")
                    return
                length |= (data[index] & 0x7F) << shift
                shift += 7
            else:
                start = index + 1
                end = start + length
                if end > size:
                    break
                if first >> 4 == PUBLISH:
                    topic_end = start + 2 + (data[start] << 8 | data[start + 1])
                    topic = data[start + 2 : topic_end].decode("utf-8", "replace")
                    qos = (first >> 1) & 3
                    if qos:
                        packet_id = data[topic_end : topic_end + 2]
                        topic_end += 2
                        connection.acknowledge(qos, packet_id)
                    put(Message(topic, data[topic_end:end], qos, bool(first & 1)))
                    arrived = True
                else:
                    connection.control_packet(first, data[start:end])
                pos = end
                continue
            break  # the length field itself is incomplete
        self._rest = data[pos:] if pos else data
        if arrived:
            incoming.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection.lost(exc)

    def pause_writing(self) -> None:
        self._connection.writing_paused()

    def resume_writing(self) -> None:
        self._connection.writing_resumed()


class BrokerConnection:
    """One MQTT 3.1.1 connection to the bridge's broker (`async with`; see the module docstring)."""

    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        will: Will | None = None,
        *,
        max_queued_incoming: int = MAX_QUEUED_INCOMING,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.will = will
        self.timeout_s = timeout_s
        self.incoming = _Incoming(self, max_queued_incoming)
        self.transport: asyncio.Transport | None = None
        self._wire: _Wire | None = None
        self.reading_paused = False
        #: Why the connection ended (`None` while it lasts or before it starts).
        self.lost_error: BrokerError | None = None
        self.last_received = 0.0
        self._connack: asyncio.Future[int] | None = None
        self._acks: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 0
        self._closed: asyncio.Future[None] | None = None
        self._write_ready: asyncio.Future[None] | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._disconnecting = False

    # -- what callers use -----------------------------------------------------------------------

    @property
    def messages(self) -> _Incoming:
        return self.incoming

    @property
    def open_transport(self) -> asyncio.Transport | None:
        """The transport while it is open (not closing); `None` before, during and after the end."""
        transport = self.transport
        return transport if transport is not None and not transport.is_closing() else None

    @property
    def write_buffer_size(self) -> int:
        """Bytes written but not yet taken by the socket."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    async def publish(self, topic: str, payload: Payload = b"", qos: int = 0, retain: bool = False) -> None:
        data = _as_bytes(payload)
        name = _string(topic)
        first = PUBLISH << 4 | qos << 1 | (1 if retain else 0)
        if qos == 0:
            self._write(_packet(first, name + data))
            if self._write_ready is not None:
                await self._writable()
            return
        if qos != 1:
            raise ValueError("the bridge publishes at QoS 0 or 1")
        packet_id, ack = self._expect()
        self._write(_packet(first, name + packet_id.to_bytes(2, "big") + data))
        await self._acknowledged(packet_id, ack, "PUBACK")

    async def subscribe(self, topic: str, qos: int = 0) -> None:
        if qos not in (0, 1):
            raise ValueError("the bridge subscribes at QoS 0 or 1")
        packet_id, ack = self._expect()
        self._write(_packet(SUBSCRIBE << 4 | 0x02, packet_id.to_bytes(2, "big") + _string(topic) + bytes((qos,))))
        granted = await self._acknowledged(packet_id, ack, "SUBACK")
        if not granted or granted[0] == 0x80:
            raise BrokerError(f"MQTT broker {endpoint(self.config)} refused the subscription to {topic!r}")

    async def unsubscribe(self, topic: str) -> None:
        packet_id, ack = self._expect()
        self._write(_packet(UNSUBSCRIBE << 4 | 0x02, packet_id.to_bytes(2, "big") + _string(topic)))
        await self._acknowledged(packet_id, ack, "UNSUBACK")

    async def __aenter__(self) -> BrokerConnection:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.disconnect()

    async def connect(self) -> None:
        """Open the connection and wait for the broker's CONNACK; `BrokerAuthError` on refused credentials."""
        config = self.config
        loop = asyncio.get_running_loop()
        tls = _tls_context(config)
        self._closed = loop.create_future()
        self._connack = loop.create_future()
        self.lost_error = None
        try:
            async with asyncio.timeout(self.timeout_s):
                transport, self._wire = await loop.create_connection(
                    lambda: _Wire(self), config.host, config.port, ssl=tls, server_hostname=config.host if tls else None
                )
                password = config.password.get_secret_value()
                hello = connect_packet(self.client_id, config.keepalive_s, config.username, password, self.will)
                transport.write(hello)
                code = await self._connack
        except TimeoutError:
            self._abort()
            raise BrokerError(f"MQTT broker {endpoint(config)} did not answer within {self.timeout_s:g} s") from None
        except OSError as err:  # refused, unreachable, TLS handshake (ssl.SSLError is an OSError)
            self._abort()
            raise BrokerError(f"MQTT broker {endpoint(config)}: {err}") from err
        except BrokerError:
            self._abort()
            raise
        if code:
            self._abort()
            reason = CONNACK_REASONS.get(code, f"return code {code}")
            if code in CONNACK_AUTH_REFUSED:
                raise BrokerAuthError(f"MQTT broker {endpoint(config)} refused user {config.username!r}: {reason}")
            raise BrokerError(f"MQTT broker {endpoint(config)} refused the connection: {reason}")
        self._schedule_keepalive()

    async def disconnect(self) -> None:
        """Say DISCONNECT (so the broker drops the last will) and close; never raises."""
        transport, closed = self.transport, self._closed
        if transport is None or closed is None or closed.done():
            self._abort()
            return
        self._disconnecting = True
        if not transport.is_closing():
            transport.write(DISCONNECT_PACKET)
            transport.close()  # sends what is buffered first
        try:
            async with asyncio.timeout(self.timeout_s):
                await asyncio.shield(closed)
        except TimeoutError:
            self._abort()

    # -- flow control -------------------------------------------------------------------------

    def pause_reading(self) -> None:
        if self.reading_paused:
            return
        self.reading_paused = True
        READER_STATS.pauses += 1
        if (transport := self.open_transport) is not None:
            transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.reading_paused:
            return
        self.reading_paused = False
        if (transport := self.open_transport) is not None:
            transport.resume_reading()
        if self._wire is not None:  # what the last read brought beyond the high-water mark
            asyncio.get_running_loop().call_soon(self._wire.parse)

    def writing_paused(self) -> None:
        if self._write_ready is None:
            self._write_ready = asyncio.get_running_loop().create_future()

    def writing_resumed(self) -> None:
        ready, self._write_ready = self._write_ready, None
        if ready is not None and not ready.done():
            ready.set_result(None)

    async def _writable(self) -> None:
        ready = self._write_ready
        if ready is None:
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                await asyncio.shield(ready)
        except TimeoutError:
            raise BrokerError(f"MQTT broker {endpoint(self.config)} took nothing for {self.timeout_s:g} s") from None
        if self.lost_error is not None:
            raise self.lost_error

    # -- packets ------------------------------------------------------------------------------

    def _write(self, packet: bytes) -> None:
        if self.lost_error is not None:
            raise self.lost_error
        transport = self.open_transport
        if transport is None:
            raise BrokerError(f"MQTT broker {endpoint(self.config)}: not connected")
        transport.write(packet)

    def _expect(self) -> tuple[int, asyncio.Future[bytes]]:
        """A free packet identifier and the future its acknowledgement completes."""
        for _ in range(0xFFFF):
            self._next_id = self._next_id % 0xFFFF + 1
            if self._next_id not in self._acks:
                break
        else:
            raise BrokerError(f"MQTT broker {endpoint(self.config)}: 65535 acknowledgements outstanding")
        ack: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._acks[self._next_id] = ack
        return self._next_id, ack

    async def _acknowledged(self, packet_id: int, ack: asyncio.Future[bytes], what: str) -> bytes:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await ack
        except TimeoutError:
            raise BrokerError(f"MQTT broker {endpoint(self.config)}: no {what} within {self.timeout_s:g} s") from None
        finally:
            if self._acks.get(packet_id) is ack:
                del self._acks[packet_id]

    def acknowledge(self, qos: int, packet_id: bytes) -> None:
        """Answer a received QoS 1 (PUBACK) or QoS 2 (PUBREC) PUBLISH."""
        if (transport := self.open_transport) is not None:
            transport.write((b"\x40\x02" if qos == 1 else b"\x50\x02") + packet_id)

    def control_packet(self, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind in (PUBACK, SUBACK, UNSUBACK) and len(body) >= 2:
            ack = self._acks.get(body[0] << 8 | body[1])
            if ack is not None and not ack.done():
                ack.set_result(body[2:])
        elif kind == PUBREL and len(body) >= 2:  # the end of a QoS 2 message we received
            if (transport := self.open_transport) is not None:
                transport.write(b"\x70\x02" + body[:2])
        elif kind == CONNACK and len(body) >= 2:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(body[1])
        elif kind == PINGRESP:
            pass  # `last_received` is enough
        else:
            self.protocol_error(f"unexpected packet type {kind}")

    def protocol_error(self, what: str) -> None:
        MQTT_LOGGER.warning("MQTT broker %s: %s; closing the connection", endpoint(self.config), what)
        self.lost_error = BrokerError(f"MQTT broker {endpoint(self.config)}: protocol error ({what})")
        self._abort()

    # -- keepalive and the end ----------------------------------------------------------------

    def _schedule_keepalive(self) -> None:
        if self.config.keepalive_s > 0:
            loop = asyncio.get_running_loop()
            self._keepalive = loop.call_later(self.config.keepalive_s, self._ping)

    def _ping(self) -> None:
        transport = self.open_transport
        if transport is None:
            return
        silent = time.monotonic() - self.last_received
        if not self.reading_paused and silent > 2 * self.config.keepalive_s:
            self.lost_error = BrokerError(
                f"MQTT broker {endpoint(self.config)}: nothing heard for {silent:.0f} s (keepalive)"
            )
            self._abort()
            return
        transport.write(PINGREQ_PACKET)
        self._schedule_keepalive()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def lost(self, exc: Exception | None) -> None:
        """The transport closed: fail every wait, end the iteration."""
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self.lost_error is None:
            if self._disconnecting:
                self.lost_error = BrokerError(f"MQTT broker {endpoint(self.config)}: disconnected")
            else:
                reason = f": {exc}" if exc else " closed the connection"
                self.lost_error = BrokerError(f"MQTT broker {endpoint(self.config)}{reason}")
        error = self.lost_error
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(error)
        for ack in self._acks.values():
            if not ack.done():
                ack.set_exception(error)
        self._acks.clear()
        self.writing_resumed()
        self.incoming.wake()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)


def _tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    if not config.tls.enabled:
        return None
    context = ssl.create_default_context(cafile=str(config.tls.ca_file) if config.tls.ca_file else None)
    if config.tls.insecure:
        context.check_hostname = False
    return context


def make_client(config: MqttConfig, client_id: str, will: Will | None = None) -> BrokerConnection:
    """An unconnected client for the configured broker (use it with `async with`)."""
    return BrokerConnection(config, client_id, will)
