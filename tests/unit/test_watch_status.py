"""The status lines of `meter-bridge watch` (meterbridge/watch.py): up, down, back, and why."""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timedelta

import pytest

from meterbridge.errors import BrokerError
from meterbridge.watch import PeerStatus, failure_reason

T0 = datetime(2026, 12, 5, 7, 40, 0).astimezone()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_peer_that_never_answered_is_not_up_yet() -> None:
    peer = PeerStatus("Home Assistant", "http://127.0.0.1:18123")
    assert peer.line() == "Home Assistant http://127.0.0.1:18123 connecting"
    peer.went_down(at(0), "connection refused")
    peer.went_down(at(3), "connection refused")
    assert peer.line() == "Home Assistant http://127.0.0.1:18123 not up yet, trying since 07:40:00 (connection refused)"


def test_down_since_the_first_failure_with_the_latest_reason_then_back() -> None:
    peer = PeerStatus("broker", "127.0.0.1:18883")
    peer.went_up(at(0))
    assert peer.line() == "broker 127.0.0.1:18883 up since 07:40:00"
    peer.went_down(at(10), "closed the connection")
    peer.went_down(at(11), "connection refused")
    assert peer.line() == "broker 127.0.0.1:18883 down since 07:40:10 (connection refused)"
    peer.went_up(at(52))
    peer.went_up(at(53))  # still up: nothing changes
    assert peer.line() == "broker 127.0.0.1:18883 up, back since 07:40:52 (was down from 07:40:10, 42 s)"


async def test_a_refused_connection_reads_connection_refused() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionRefusedError) as refused:
        await asyncio.open_connection("127.0.0.1", port)
    assert failure_reason(refused.value) == "connection refused"
    as_the_transport_raises_it = BrokerError(f"MQTT broker 127.0.0.1:{port}: {refused.value}")
    as_the_transport_raises_it.__cause__ = refused.value
    assert failure_reason(as_the_transport_raises_it) == "connection refused"
    assert failure_reason(BrokerError("MQTT broker 127.0.0.1:1: closed the connection")) == "closed the connection"
    assert failure_reason(TimeoutError()) == "no answer"
