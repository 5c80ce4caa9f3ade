"""Pre-flight check of `make demo`: every port the demo's services listen on must be free on 127.0.0.1.

Used by scripts/demo.sh before it starts anything:

    python scripts/demo_ports.py DEMO_MQTT_PORT=18883 DEMO_HA_PORT=18123 ...

Exit 0 when every port can be bound; otherwise exit 1 with one line per taken port on stderr,
naming the port, the variable that chose it and who holds it ("held by mosquitto (PID 812)"),
and a free port to use instead. Without this check a taken port makes the broker (or HA, or
nginx) crash-loop under supervisord with "Address already in use" in a log nobody reads.

Whether a port is taken is decided by trying to bind it as the services do (127.0.0.1,
SO_REUSEADDR): the kernel's answer, nothing guessed. Who holds it is then read from /proc, as
`ss -ltnp` and psutil do: /proc/net/tcp and tcp6 list each socket's local address, state, owner
uid and inode, and /proc/PID/fd/* link to `socket:[inode]`. Hand-written (about 40 lines)
because neither tool can be relied on: `ss` (iproute2) is on a standard Debian install but not
on a minimal one (debootstrap minbase, container images) and psutil is no dependency of ours.
Another user's /proc/PID/fd cannot be read without root: then the socket's owner uid is named.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import pwd
import socket
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: What each of scripts/demo.sh's port variables is for, for the message.
PURPOSES = {
    "DEMO_MQTT_PORT": "the MQTT broker",
    "DEMO_HEALTH_PORT": "the bridge's health endpoint",
    "DEMO_HA_PORT": "Home Assistant",
    "DEMO_CONFIGURATOR_PORT": "hass-configurator",
    "DEMO_HTTPS_PORT": "nginx, https",
    "DEMO_HTTP_PORT": "nginx, http",
}

#: /proc/net/tcp states (include/net/tcp_states.h): a listener, and a socket bound but not
#: (yet) listening or connected; TIME_WAIT sockets (no inode) never block a SO_REUSEADDR bind.
TCP_LISTEN = 0x0A
TCP_CLOSE = 0x07

#: Local addresses whose sockets conflict with a bind to 127.0.0.1 (the wildcard of either family:
#: Linux's `[::]` listeners are dual-stack unless net.ipv6.bindv6only is set).
CONFLICTING = {
    ipaddress.ip_address("127.0.0.1"),
    ipaddress.ip_address("0.0.0.0"),  # noqa: S104 - an address to compare with, nothing binds it
    ipaddress.ip_address("::"),
    ipaddress.ip_address("::ffff:127.0.0.1"),
    ipaddress.ip_address("::ffff:0.0.0.0"),
}


@dataclass(frozen=True)
class ProcSocket:
    """One line of /proc/net/tcp or tcp6."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    state: int
    uid: int
    inode: int


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # the kernel prints each 32-bit word of the address in the host's byte order
    words = [int(hex_address[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(hex_address), 8)]
    return ipaddress.ip_address(b"".join(words))


def parse_proc_net_tcp(text: str) -> list[ProcSocket]:
    """The sockets of a /proc/net/tcp or tcp6 text (header line skipped); malformed lines are skipped."""
    sockets = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        try:
            hex_address, hex_port = fields[1].split(":")
            sockets.append(
                ProcSocket(_address(hex_address), int(hex_port, 16), int(fields[3], 16), int(fields[7]), int(fields[9]))
            )
        except (IndexError, ValueError):
            continue
    return sockets


def blocking(sockets: Iterable[ProcSocket], port: int) -> list[ProcSocket]:
    """The sockets that keep a server from binding 127.0.0.1:`port`, listeners first."""
    found = [s for s in sockets if s.port == port and s.address in CONFLICTING and s.inode]
    return sorted(found, key=lambda s: s.state != TCP_LISTEN)


def socket_holders(inodes: set[int], proc: Path = Path("/proc")) -> dict[int, list[int]]:
    """inode -> PIDs whose file descriptors hold that socket (only the processes we may inspect)."""
    holders: dict[int, list[int]] = {}
    targets = {f"socket:[{inode}]": inode for inode in inodes}
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = list((pid_dir / "fd").iterdir())
        except OSError:  # another user's process (EACCES), or gone
            continue
        for fd in fds:
            try:
                inode = targets.get(os.readlink(fd))
            except OSError:
                continue
            if inode is not None and int(pid_dir.name) not in holders.setdefault(inode, []):
                holders[inode].append(int(pid_dir.name))
    return holders


def _process_name(pid: int, proc: Path = Path("/proc")) -> str:
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def bind_error(port: int) -> OSError | None:
    """Why a server could not bind 127.0.0.1:`port` now (as Mosquitto, nginx and HA do: SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as err:
            return err
    return None


def describe_holder(port: int, proc: Path = Path("/proc")) -> str:
    """Who holds `port` on 127.0.0.1: "mosquitto (PID 812)", or the owner's uid when we cannot look."""
    sockets: list[ProcSocket] = []
    for table in ("tcp", "tcp6"):
        try:
            sockets += parse_proc_net_tcp((proc / "net" / table).read_text())
        except OSError:  # no IPv6 in this kernel
            continue
    found = blocking(sockets, port)
    if not found:
        return "held by a process this check cannot see"
    holders = socket_holders({s.inode for s in found}, proc)
    described = []
    for sock in found:
        pids = holders.get(sock.inode, [])
        if pids:
            names = sorted({_process_name(pid, proc) for pid in pids})
            described.append(f"{', '.join(names)} (PID {', '.join(str(pid) for pid in sorted(pids))})")
        else:
            described.append(f"another user's process (uid {sock.uid}, {_user_name(sock.uid)})")
    return "held by " + "; ".join(dict.fromkeys(described))


def _free_port_near(port: int, taken: set[int]) -> int | None:
    for candidate in range(port + 1, min(port + 100, 65536)):
        if candidate not in taken and bind_error(candidate) is None:
            return candidate
    return None


def check(ports: Sequence[tuple[str, int]]) -> list[str]:
    """The problems with the demo's `(variable, port)` list: one line each, empty when all are free."""
    problems = []
    chosen = {port for _, port in ports}
    seen: dict[int, str] = {}
    for variable, port in ports:
        purpose = PURPOSES.get(variable, variable)
        if port in seen:
            problems.append(f"port {port} is chosen twice: {seen[port]} and {variable}")
            continue
        seen[port] = variable
        error = bind_error(port)
        if error is None:
            continue
        if error.errno == errno.EADDRINUSE:
            problem = f"port {port} on 127.0.0.1 ({purpose}, {variable}) is taken: {describe_holder(port)}"
        else:  # e.g. EACCES: a port below 1024 without root
            problem = f"port {port} on 127.0.0.1 ({purpose}, {variable}) cannot be used: {error.strerror}"
        instead = _free_port_near(port, chosen)
        if instead is not None:
            problem += f"; free instead: {variable}={instead}"
        problems.append(problem)
    return problems


def main(argv: Sequence[str]) -> int:
    """Check `VARIABLE=PORT` arguments; print the problems and return 1 when there are any."""
    ports = []
    for argument in argv:
        variable, _, value = argument.partition("=")
        if not value.isdigit() or not 0 < int(value) < 65536:
            print(f"demo: {variable}={value!r} is not a TCP port", file=sys.stderr)
            return 1
        ports.append((variable, int(value)))
    problems = check(ports)
    for problem in problems:
        print(f"demo: {problem}", file=sys.stderr)
    if problems:
        print("demo: nothing was started: stop what holds the port, or choose another one", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
