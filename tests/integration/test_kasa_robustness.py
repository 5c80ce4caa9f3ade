"""Hostile traffic against the plug server: fuzzed datagrams and TCP frames, a UDP flood.

The server runs in its own event loop thread; the tests use blocking sockets on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.kasa import ThreadedPlugs
from meterbridge.model import Quantity, Reading
from meterbridge.sinks.kasa.protocol import decrypt, encrypt, frame

PLUGS = [
    {"id": "a", "alias": "A", "mac": "52:00:00:00:01:01", "meter": "a"},
    {"id": "b", "alias": "B", "mac": "52:00:00:00:01:02", "watts": 100.0},
    {"id": "c", "alias": "C", "mac": "52:00:00:00:01:03", "watts": 7.0},
]
QUERY = json.dumps({"system": {"get_sysinfo": {}}, "emeter": {"get_realtime": {}}}).encode()


@pytest.fixture(scope="module")
def plugs() -> Iterator[ThreadedPlugs]:
    """Three plugs on 127.0.0.1 that answer any number of queries a second."""
    reading = Reading.of("a", Quantity.POWER, 321.0, datetime.now(UTC))
    with ThreadedPlugs(PLUGS, [reading], max_queries_per_s=1e9) as instance:
        yield instance


def _udp_poll(port: int, sock: socket.socket) -> list[dict[str, object]]:
    """Send a Sense poll; return the (three) replies, decrypted."""
    sock.sendto(encrypt(QUERY), ("127.0.0.1", port))
    replies = []
    for _ in range(len(PLUGS)):
        data, addr = sock.recvfrom(65536)
        assert addr == ("127.0.0.1", port)  # unicast, from the plugs' port
        replies.append(json.loads(decrypt(data)))
    return replies


def _tcp_poll(port: int) -> dict[str, object]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(frame(QUERY))
        (length,) = struct.unpack(">I", _recv_exactly(conn, 4))
        return dict(json.loads(decrypt(_recv_exactly(conn, length))))


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def test_udp_and_tcp_answer_a_sense_poll(plugs: ThreadedPlugs) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        replies = _udp_poll(plugs.port, sock)
    powers = sorted(r["emeter"]["get_realtime"]["power"] for r in replies)  # type: ignore[index]
    assert powers == [7.0, 100.0, 321.0]
    assert _tcp_poll(plugs.port)["emeter"]["get_realtime"]["power"] == 321.0  # type: ignore[index]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=2000),
        st.binary(max_size=300).map(encrypt),  # garbage that survives decryption as text
        st.recursive(
            st.none() | st.integers() | st.text(max_size=5),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=3),
            max_leaves=12,
        ).map(lambda v: encrypt(json.dumps(v).encode())),
    )
)
def test_fuzzed_datagrams_never_stop_the_server(plugs: ThreadedPlugs, datagram: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(datagram, ("127.0.0.1", plugs.port))
        # A well-formed poll right after must still get every reply (late replies to a
        # fuzzed JSON query that happened to be answerable are skipped by sysinfo check).
        sock.sendto(encrypt(QUERY), ("127.0.0.1", plugs.port))
        macs = set()
        while len(macs) < len(PLUGS):
            reply = json.loads(decrypt(sock.recvfrom(65536)[0]))
            realtime = reply.get("emeter", {}).get("get_realtime")
            if realtime is not None and "system" in reply:
                macs.add(reply["system"]["get_sysinfo"]["mac"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=3000),
        st.binary(max_size=300).map(frame),  # well-framed garbage
        st.binary(max_size=300).map(lambda b: struct.pack(">I", len(b) + 50) + b),  # a message cut short
        st.integers(16 * 1024 + 1, 2**32 - 1).map(lambda n: struct.pack(">I", n)),  # absurd length
    )
)
def test_fuzzed_tcp_streams_never_stop_the_server(plugs: ThreadedPlugs, stream: bytes) -> None:
    with socket.create_connection(("127.0.0.1", plugs.port), timeout=5) as conn:
        conn.sendall(stream)
        conn.shutdown(socket.SHUT_WR)
    assert _tcp_poll(plugs.port)["system"]["get_sysinfo"]["alias"] == "A"  # type: ignore[index]


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.parametrize("limit", [None, 1e9], ids=["default-rate-limit", "every-query-answered"])
def test_flood_of_10000_datagrams_a_second_keeps_memory_bounded(limit: float | None) -> None:
    # 20,000 datagrams paced at up to 10,000/s. The test counts datagrams, not seconds: on a busy CI
    # machine the sender itself may be slower than 10,000/s, and timings never gate a test.
    rate, total = 10_000, 20_000
    reading = Reading.of("a", Quantity.POWER, 321.0, datetime.now(UTC))
    extra = {} if limit is None else {"max_queries_per_s": limit}
    with ThreadedPlugs(PLUGS, [reading], **extra) as plugs, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert plugs.sink is not None
        sock.setblocking(False)
        # the flood's replies are never read: the kernel drops them when our buffer is full
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        payloads = [encrypt(QUERY), b"\x00garbage" * 4, encrypt(b'{"system": {"set_relay_state": {"state": 0}}}')]
        before = _rss_kib()
        start = time.monotonic()
        sent = 0
        while sent < total and (elapsed := time.monotonic() - start) < 60:
            while sent < min(total, elapsed * rate):
                try:
                    sock.sendto(payloads[sent % 3], ("127.0.0.1", plugs.port))
                except BlockingIOError:
                    break
                sent += 1
            time.sleep(0.001)
        seconds = time.monotonic() - start
        time.sleep(0.5)  # let the server work through what the kernel queued
        after = _rss_kib()
        stats = plugs.sink.stats
        print(
            f"\nflood ({limit=}): sent {sent} datagrams in {seconds:.1f} s ({sent / seconds:.0f}/s); "
            f"RSS {before} -> {after} KiB (+{after - before} KiB); "
            f"rate-limited {stats.errors['udp_rate_limited']}, garbage {stats.errors['udp_garbage']}, "
            f"refused {stats.errors['refused']}, backlog drops {stats.errors['udp_backlog']}"
        )
        assert sent == total
        if limit is None:
            assert stats.errors["udp_rate_limited"] > 0
        assert after - before < 16 * 1024  # KiB: nothing accumulates per datagram
        # still answering once the flood is over
        time.sleep(1.0)  # the token bucket refills
        while True:  # drain stale flood replies
            try:
                sock.recvfrom(65536)
            except BlockingIOError:
                break
        sock.settimeout(5)
        assert len(_udp_poll(plugs.port, sock)) == 3
