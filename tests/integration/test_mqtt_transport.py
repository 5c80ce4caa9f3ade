"""The bridge's MQTT transport (`meterbridge.mqtt.BrokerConnection`) against a real Mosquitto.

It must keep every message: back-pressure instead of discards, many packets per read, direct
writes with the transport's buffer as the fallback when the socket is full, and the message
iterator without a task per message. aiomqtt is the independent peer (observer) here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.mosquitto import Mosquitto
from helpers.mqtt import client_for
from meterbridge.errors import BrokerAuthError, BrokerError
from meterbridge.mqtt import READER_STATS, BrokerConnection, Will, make_client
from meterbridge.sections import MqttConfig


@pytest.fixture
def roomy_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that queues a burst for a slow subscriber (as the release's does) instead of dropping it."""
    broker = Mosquitto(tmp_path / "mosquitto")
    with broker.config_file.open("a") as conf:
        conf.write("max_queued_messages 100000\n")
    broker.start()
    yield broker
    broker.stop()


def bridge_client(broker: Mosquitto, client_id: str, will: Will | None = None) -> BrokerConnection:
    return make_client(MqttConfig.model_validate(broker.bridge_mqtt(client_id)), client_id, will)


async def publish_burst(broker: Mosquitto, topic: str, count: int) -> None:
    """`count` QoS 0 messages `0`..`count-1` as fast as a C publisher goes."""
    lines = "".join(f"{n}\n" for n in range(count)).encode()
    cmd = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-u", "observer"]
    cmd += ["-P", broker.password("observer"), "-t", topic, "-q", "0", "-l"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=subprocess.PIPE)
    await proc.communicate(lines)
    assert proc.returncode == 0


async def test_a_burst_larger_than_the_queue_pauses_reading_and_loses_nothing(roomy_broker: Mosquitto) -> None:
    count = 30_000
    client = bridge_client(roomy_broker, "burst")
    client.messages.high_water, client.messages.low_water = 500, 250  # small, so the burst overflows it
    pauses_before = READER_STATS.pauses
    async with client:
        await client.subscribe("burst/t", qos=0)
        await publish_burst(roomy_broker, "burst/t", count)
        # nobody takes messages: the client must stop reading, not queue without end
        for _ in range(1200):  # 60 s: a hang bound only
            await asyncio.sleep(0.05)
            if client.reading_paused:
                break
        assert client.reading_paused
        await asyncio.sleep(0.5)
        assert len(client.messages) <= 500 + 1
        assert READER_STATS.pauses > pauses_before
        got: list[int] = []
        async with asyncio.timeout(60):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                got.append(int(message.payload))
                if len(got) == count:
                    break
    assert got == list(range(count))  # every message, in order


async def test_qos0_publish_is_on_the_wire_when_it_returns(broker: Mosquitto, base_topic: str) -> None:
    async with client_for(broker) as observer, bridge_client(broker, f"{base_topic}-direct") as client:
        await observer.subscribe(f"{base_topic}/direct")
        for n in range(50):
            await client.publish(f"{base_topic}/direct", str(n).encode(), qos=0)
            assert client.write_buffer_size == 0  # written by the call itself, nothing left waiting
        got = []
        async with asyncio.timeout(10):
            async for message in observer.messages:
                got.append(message.payload)
                if len(got) == 50:
                    break
        assert got == [str(n).encode() for n in range(50)]


async def test_a_publish_larger_than_the_socket_buffer_is_finished_by_the_loop_writer(own_broker: Mosquitto) -> None:
    payload = os.urandom(8 * 1024 * 1024)  # far more than a loopback socket buffer takes at once
    assert own_broker.process is not None
    async with client_for(own_broker) as observer, bridge_client(own_broker, "big") as client:
        await observer.subscribe("big/t", qos=1)
        os.kill(own_broker.process.pid, signal.SIGSTOP)  # the broker reads nothing for a while
        try:
            publish = asyncio.create_task(client.publish("big/t", payload, qos=1))
            await asyncio.sleep(0.5)
            assert client.write_buffer_size > 0  # the rest waits for the socket
            assert not publish.done()
        finally:
            os.kill(own_broker.process.pid, signal.SIGCONT)
        async with asyncio.timeout(30):
            await publish
            async for message in observer.messages:
                assert message.payload == payload
                break


async def test_iteration_ends_with_mqtt_error_when_the_broker_goes(own_broker: Mosquitto) -> None:
    async def read_until_the_broker_goes() -> None:
        async with bridge_client(own_broker, "goes") as client:
            await client.subscribe("goes/t")
            async with asyncio.timeout(20):
                own_broker.stop()
                async for _ in client.messages:
                    pass

    with pytest.raises(BrokerError):
        await read_until_the_broker_goes()


async def test_a_task_that_stops_iterating_leaves_the_other_iterator_woken(broker: Mosquitto, base_topic: str) -> None:
    async with bridge_client(broker, f"{base_topic}-two") as client:
        await client.subscribe(f"{base_topic}/two", qos=0)
        got: dict[str, list[bytes]] = {"first": [], "second": []}

        async def take(name: str) -> None:
            async for message in client.messages:
                got[name].append(message.payload)

        first = asyncio.create_task(take("first"))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(take("second"))
        await asyncio.sleep(0.1)  # both wait on the empty queue
        second.cancel()
        async with client_for(broker) as observer:
            for n in range(20):
                await observer.publish(f"{base_topic}/two", str(n).encode())
        async with asyncio.timeout(10):
            while len(got["first"]) < 20:
                await asyncio.sleep(0.05)
        first.cancel()
        assert got == {"first": [str(n).encode() for n in range(20)], "second": []}


async def test_a_publish_on_a_lost_connection_fails_at_once(own_broker: Mosquitto) -> None:
    async with bridge_client(own_broker, "lost") as client:
        await client.subscribe("lost/t", qos=1)
        own_broker.stop()

        async def publish_until_it_fails() -> None:
            while True:
                await client.publish("lost/t", b"x", qos=1)

        async with asyncio.timeout(5):  # not the 10 s acknowledgement timeout
            with pytest.raises(BrokerError):
                await publish_until_it_fails()


async def test_refused_credentials_and_no_broker_are_our_errors(broker: Mosquitto) -> None:
    config = MqttConfig.model_validate({**broker.bridge_mqtt("refused"), "password": "wrong"})
    with pytest.raises(BrokerAuthError, match="refused user"):
        async with make_client(config, "refused"):
            pass
    nobody = MqttConfig.model_validate({**broker.bridge_mqtt("nobody"), "port": 1})
    with pytest.raises(BrokerError, match=":1"):
        async with make_client(nobody, "nobody"):
            pass


async def test_qos1_both_ways_retain_and_the_last_will(broker: Mosquitto, base_topic: str) -> None:
    will = Will(f"{base_topic}/will", b"gone", qos=1, retain=False)
    async with client_for(broker) as observer:
        await observer.subscribe(f"{base_topic}/#", qos=1)
        client = bridge_client(broker, f"{base_topic}-qos1", will)
        await client.connect()
        await client.subscribe(f"{base_topic}/in", qos=1)
        await client.publish(f"{base_topic}/kept", "retained", qos=1, retain=True)
        await observer.publish(f"{base_topic}/in", b"to the bridge", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                assert (message.topic, message.payload, message.qos) == (f"{base_topic}/in", b"to the bridge", 1)
                break
        assert client.transport is not None
        client.transport.abort()  # no DISCONNECT: the broker publishes the will
        got = {}
        async with asyncio.timeout(10):
            async for message in observer.messages:
                got[message.topic.value] = (message.payload, message.retain)
                if f"{base_topic}/will" in got:
                    break
        assert got[f"{base_topic}/kept"] == (b"retained", False)  # live, not from the store
        assert got[f"{base_topic}/will"] == (b"gone", False)
    async with client_for(broker) as late:  # the retained one is kept for the next subscriber
        await late.subscribe(f"{base_topic}/kept")
        async with asyncio.timeout(10):
            async for message in late.messages:
                assert (message.payload, message.retain) == (b"retained", True)
                break
