"""The MQTT transport's packet cutting, fed by a peer on a real loopback socket that sends bytes
the way a broker may (one byte per segment) or a broken one would (a malformed length).

Mosquitto cannot be made to cut its writes or send garbage, so the peer here is an asyncio
server written for the test; it speaks MQTT 3.1.1 packets built by hand from the standard
(OASIS MQTT 3.1.1, sections 2.2.3, 3.2, 3.3, 3.4). Everything else about the transport is tested
against the real Mosquitto in tests/integration/test_mqtt_transport.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from meterbridge.errors import BrokerAuthError, BrokerError
from meterbridge.mqtt import BrokerConnection, connect_packet
from meterbridge.sections import MqttConfig

Peer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CONNACK_OK = b"\x20\x02\x00\x00"


async def read_packet(reader: asyncio.StreamReader) -> bytes:
    """One whole packet from the client (first byte, remaining length, body)."""
    first = await reader.readexactly(1)
    length, shift, raw = 0, 0, b""
    while True:
        byte = await reader.readexactly(1)
        raw += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if byte[0] < 0x80:
            return first + raw + await reader.readexactly(length)


async def dribble(writer: asyncio.StreamWriter, data: bytes) -> None:
    """`data` one byte per segment (each read of the client gets at most one byte)."""
    for n in range(len(data)):
        writer.write(data[n : n + 1])
        await writer.drain()
        await asyncio.sleep(0.001)


@asynccontextmanager
async def peer(handler: Peer) -> AsyncIterator[MqttConfig]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield MqttConfig.model_validate({"host": "127.0.0.1", "port": port, "username": "u", "password": "p"})
    finally:
        server.close()


async def test_packets_cut_into_single_bytes_arrive_whole_and_qos1_is_acknowledged() -> None:
    payload = bytes(range(256)) * 2  # 512 bytes: a two-byte remaining length
    topic = b"hems/t"
    body = len(topic).to_bytes(2, "big") + topic + b"\x12\x34" + payload
    publish = b"\x32" + bytes((len(body) % 128 | 0x80, len(body) // 128)) + body  # QoS 1, id 0x1234
    acks: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connect = await read_packet(reader)
        assert connect == connect_packet("wire", 30, "u", "p", None)
        await dribble(writer, CONNACK_OK + publish)
        acks.append(await read_packet(reader))
        await reader.read()  # until the client goes

    async with peer(handler) as config, BrokerConnection(config, "wire") as client:
        async with asyncio.timeout(10):
            async for message in client.messages:
                assert (message.topic, message.payload, message.qos, message.retain) == ("hems/t", payload, 1, False)
                break
            while not acks:
                await asyncio.sleep(0.01)
    assert acks == [b"\x40\x02\x12\x34"]  # PUBACK with the message's packet identifier


async def test_a_malformed_remaining_length_ends_the_connection_with_our_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_packet(reader)
        writer.write(CONNACK_OK + b"\x30\xff\xff\xff\xff\x7f")  # five length bytes: at most four are allowed
        await writer.drain()
        await reader.read()

    async def iterate(client: BrokerConnection) -> None:
        async for _ in client.messages:
            pass

    async with peer(handler) as config, BrokerConnection(config, "wire") as client:
        with pytest.raises(BrokerError, match="protocol error"):
            async with asyncio.timeout(10):
                await iterate(client)


@pytest.mark.parametrize(("code", "error"), [(5, BrokerAuthError), (4, BrokerAuthError), (3, BrokerError)])
async def test_a_refusing_connack_is_our_error(code: int, error: type[BrokerError]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_packet(reader)
        writer.write(b"\x20\x02\x00" + bytes((code,)))
        await writer.drain()
        await reader.read()

    async with peer(handler) as config:
        with pytest.raises(error) as raised:
            async with BrokerConnection(config, "wire", timeout_s=30):
                pass
    assert f"127.0.0.1:{config.port}" in str(raised.value)
    assert (code == 3) is not isinstance(raised.value, BrokerAuthError)


async def test_silence_after_connect_times_out_as_our_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers CONNECT

    async with peer(handler) as config:
        with pytest.raises(BrokerError, match=r"did not answer within 0\.5 s"):
            async with BrokerConnection(config, "wire", timeout_s=0.5):
                pass
