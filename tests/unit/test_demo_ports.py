"""`make demo`'s pre-flight port check (scripts/demo_ports.py) read against the kernel's own /proc.

The sockets are real: each test opens its listener and checks that the check finds it in
/proc/net/tcp or tcp6, with this process's uid and inode, and names this process as the holder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import demo_ports  # noqa: E402 - scripts/ is not a package


@pytest.fixture(params=[(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")])
def listener(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    """A listening socket on 127.0.0.1, on IPv6's dual-stack wildcard, or on IPv4's (each blocks the demo)."""
    family, address = request.param
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, 0))
        sock.listen()
        yield sock


def test_the_kernels_table_gives_our_listener(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    table = "tcp6" if listener.family == socket.AF_INET6 else "tcp"
    sockets = demo_ports.parse_proc_net_tcp(Path(f"/proc/net/{table}").read_text())
    [found] = demo_ports.blocking(sockets, port)
    assert str(found.address) == listener.getsockname()[0]
    assert found.state == demo_ports.TCP_LISTEN
    assert found.uid == os.getuid()
    assert found.inode == os.fstat(listener.fileno()).st_ino


def test_a_taken_port_names_its_holder(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    [problem] = demo_ports.check([("DEMO_MQTT_PORT", port)])
    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert f"port {port} on 127.0.0.1 (the MQTT broker, DEMO_MQTT_PORT) is taken: " in problem
    assert f"held by {comm} (PID {os.getpid()})" in problem
    instead = int(problem.rsplit("DEMO_MQTT_PORT=", 1)[1])
    assert demo_ports.bind_error(instead) is None


def test_a_connected_socket_and_other_addresses_do_not_count() -> None:
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.2", 0))  # another loopback address: no conflict with 127.0.0.1
        server.listen()
        port = server.getsockname()[1]
        client.connect(("127.0.0.2", port))
        sockets = demo_ports.parse_proc_net_tcp(Path("/proc/net/tcp").read_text())
        assert [s for s in sockets if s.port == port]  # the listener and the accepted side are there
        assert demo_ports.blocking(sockets, port) == []
        assert demo_ports.check([("DEMO_HA_PORT", port)]) == []


def test_the_same_port_twice_is_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    problems = demo_ports.check([("DEMO_HTTP_PORT", port), ("DEMO_HTTPS_PORT", port)])
    assert problems == [f"port {port} is chosen twice: DEMO_HTTP_PORT and DEMO_HTTPS_PORT"]


def test_malformed_lines_are_skipped() -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    assert demo_ports.parse_proc_net_tcp(header + "   0: zz:yy\n\n   1: 0100007F:1F90 00000000:0000 0A\n") == []


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_another_users_process_is_named_by_its_uid(listener: socket.socket) -> None:
    # run the check as `nobody`: root's /proc/PID/fd is closed to it, /proc/net/tcp is not. From a
    # copy `nobody` can read: the checkout may be under a home it cannot pass (/root is 0700).
    port = listener.getsockname()[1]
    copy = Path(tempfile.mkdtemp(prefix="demo-ports-"))
    copy.chmod(0o755)
    shutil.copy(REPO / "scripts" / "demo_ports.py", copy / "demo_ports.py")
    (copy / "demo_ports.py").chmod(0o644)
    try:
        result = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3",
             str(copy / "demo_ports.py"), f"DEMO_HA_PORT={port}"],
            capture_output=True, text=True, timeout=30, check=False, cwd="/",
        )  # fmt: skip
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    assert result.returncode == 1, result.stderr
    user = pwd.getpwuid(os.getuid()).pw_name
    assert f"port {port} on 127.0.0.1 (Home Assistant, DEMO_HA_PORT) is taken: " in result.stderr
    assert f"held by another user's process (uid {os.getuid()}, {user})" in result.stderr
    assert "nothing was started" in result.stderr


def test_free_ports_pass() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert demo_ports.main([f"DEMO_MQTT_PORT={port}"]) == 0
