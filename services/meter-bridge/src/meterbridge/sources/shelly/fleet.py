"""The Shelly fleet of one home: find devices on the LAN, and one MQTT link to the provisioned ones.

`meter-bridge shelly scan` browses mDNS for `_shelly._tcp` (Gen2+ devices announce it, with TXT
`gen`, `app`, `ver`; the instance name is the device id) and, optionally, probes an address range
with `Shelly.GetDeviceInfo` (open without auth). Every device found is asked once more over HTTP
for its id, model and firmware; Gen1 devices (no `/rpc`) and anything else are left out. Each row
says whether the device has an identity from this appliance's provisioning and whether it is
online on the bridge's broker (retained `shelly/<device id>/online`).

`FleetLink` is the bridge-side view the fleet commands share (`update`, `logs`, the HA update
entities): RPC over MQTT (`ShellyMqttRpc`, replies inside each device's prefix), every device's
`<prefix>/online` with a count of live `true`s (a reboot shows as a new one), the devices'
`debug/log` lines and the demand-response state flex publishes (`<base>/flex/state`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...asyncutil import stop_tasks
from ...config import load_config
from ...errors import BridgeError, BrokerError, ConfigError, ParseError
from ...logutil import redact
from ...mqtt import MqttClient, make_client
from ...sections import MqttConfig
from .identity import DEVICE_ID, ShellyIdentityStore, device_prefix
from .parser import parse_device_info, parse_online
from .relay import ShellyMqttRpc
from .rpc import ShellyHttpRpc

_LOGGER = logging.getLogger(__name__)

SHELLY_SERVICE = "_shelly._tcp.local."
#: Probes of an address range at once (a /24 takes a few seconds).
PROBE_CONCURRENCY = 32


# -- finding devices ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """Something that may be a Shelly: `host` is `ip` or `ip:port` (port 80 is left out)."""

    host: str
    via: str  # "mdns" or "probe"
    name: str | None = None


def host_of(address: str, port: int) -> str:
    """`ip` for port 80 (what the devices use), else `ip:port`."""
    return address if port == 80 else f"{address}:{port}"


def parse_mdns_service(
    name: str, addresses: Sequence[str], port: int | None, properties: Mapping[Any, Any]
) -> Candidate | None:
    """A `_shelly._tcp` service record -> a candidate, or None for what is not a Gen2+ Shelly.

    Pure (python-zeroconf's `ServiceInfo` gives these fields; TXT keys and values are bytes).
    Gen1 devices do not announce `_shelly._tcp`; a record without `gen` >= 2 is skipped anyway.
    """
    txt = {_text(k): _text(v) for k, v in properties.items()}
    gen = txt.get("gen")
    if gen is None or not gen.isdigit() or int(gen) < 2:
        return None
    ipv4 = [a for a in addresses if _is_ipv4(a)]
    if not ipv4 or port is None:
        return None
    instance = name.split(".", 1)[0]
    return Candidate(host_of(ipv4[0], port), "mdns", instance)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def _is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


def parse_range(spec: str) -> list[str]:
    """Addresses of `A.B.C.D`, `A.B.C.D/NN` (its hosts) or `A.B.C.D-A.B.C.E`; raises `ConfigError`.

    At most 4096 addresses: a typo like `/8` must not probe a whole network.
    """
    try:
        if "/" in spec:
            network = ipaddress.IPv4Network(spec, strict=False)
            addresses = [str(a) for a in (network.hosts() if network.num_addresses > 2 else network)]
        elif "-" in spec:
            first, _, last = spec.partition("-")
            start, end = ipaddress.IPv4Address(first.strip()), ipaddress.IPv4Address(last.strip())
            if end < start:
                raise ValueError(f"{end} is before {start}")
            if int(end) - int(start) >= 4096:
                raise ValueError("more than 4096 addresses")
            addresses = [str(ipaddress.IPv4Address(n)) for n in range(int(start), int(end) + 1)]
        else:
            addresses = [str(ipaddress.IPv4Address(spec.strip()))]
    except ValueError as err:
        raise ConfigError([f"--range {spec}: {err}"]) from err
    if len(addresses) > 4096:
        raise ConfigError([f"--range {spec}: more than 4096 addresses"])
    return addresses


async def browse_mdns(seconds: float, interfaces: Sequence[str] | None = None) -> list[Candidate]:
    """The `_shelly._tcp` services announced within `seconds` (python-zeroconf)."""
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

    names: list[str] = []

    def on_change(**kwargs: Any) -> None:
        name = kwargs.get("name")
        if isinstance(name, str) and name not in names:
            names.append(name)

    kwargs: dict[str, Any] = {"ip_version": IPVersion.V4Only}
    if interfaces:
        kwargs["interfaces"] = list(interfaces)
    zc = AsyncZeroconf(**kwargs)
    found: list[Candidate] = []
    try:
        browser = AsyncServiceBrowser(zc.zeroconf, SHELLY_SERVICE, handlers=[on_change])
        await asyncio.sleep(seconds)
        await browser.async_cancel()
        for name in names:
            info = await zc.async_get_service_info(SHELLY_SERVICE, name, 3000)
            if info is None:
                continue
            candidate = parse_mdns_service(name, info.parsed_addresses(), info.port, info.properties)
            if candidate is not None:
                found.append(candidate)
    finally:
        await zc.async_close()
    return found


@dataclass(slots=True)
class FoundDevice:
    """One Gen2+ device the scan found (a row of its table / an object of its JSON)."""

    device_id: str
    host: str
    model: str | None
    app: str | None
    firmware: str | None
    fw_id: str | None
    generation: int | None
    found_by: list[str] = field(default_factory=list)
    auth: bool = False
    provisioned: bool = False
    #: True/False from the broker's retained `shelly/<id>/online`; None when the broker was not asked.
    online: bool | None = None

    @property
    def prefix(self) -> str:
        """The topic prefix provisioning gives this device."""
        return device_prefix(self.device_id)


async def identify(candidate: Candidate, timeout_s: float) -> FoundDevice | None:
    """Ask a candidate `Shelly.GetDeviceInfo` (no auth needed); None when it is no Gen2+ Shelly."""
    try:
        async with ShellyHttpRpc(candidate.host, None, timeout_s) as rpc:
            raw = await rpc.call("Shelly.GetDeviceInfo")
        info = parse_device_info(raw)
    except (BridgeError, ParseError):
        return None
    if info.generation is not None and info.generation < 2:
        return None
    fw_id = raw.get("fw_id") if isinstance(raw, dict) else None
    return FoundDevice(
        info.device_id, candidate.host, info.model, info.app, info.firmware,
        fw_id if isinstance(fw_id, str) else None, info.generation, [candidate.via],
        auth=bool(raw.get("auth_en")) if isinstance(raw, dict) else False,
    )  # fmt: skip


async def probe(addresses: Iterable[str], ports: Sequence[int], timeout_s: float) -> list[FoundDevice]:
    """`Shelly.GetDeviceInfo` on every address and port, `PROBE_CONCURRENCY` at a time."""
    gate = asyncio.Semaphore(PROBE_CONCURRENCY)

    async def one(host: str) -> FoundDevice | None:
        async with gate:
            return await identify(Candidate(host, "probe"), timeout_s)

    hosts = [host_of(address, port) for address in addresses for port in ports]
    return [d for d in await asyncio.gather(*(one(h) for h in hosts)) if d is not None]


async def scan(
    mdns_s: float,
    addresses: Sequence[str],
    ports: Sequence[int],
    timeout_s: float = 2.0,
    interfaces: Sequence[str] | None = None,
) -> list[FoundDevice]:
    """mDNS (for `mdns_s` seconds, 0 = not at all) plus the probed range; one row per device id."""
    found: list[FoundDevice] = []
    if mdns_s > 0:
        try:
            candidates = await browse_mdns(mdns_s, interfaces)
        except OSError as err:  # no multicast-capable interface (a container without a LAN)
            _LOGGER.warning("mDNS unavailable (%s): only the --range addresses are probed", err)
            candidates = []
        found += [d for d in await asyncio.gather(*(identify(c, timeout_s) for c in candidates)) if d is not None]
    if addresses:
        found += await probe(addresses, ports, timeout_s)
    by_id: dict[str, FoundDevice] = {}
    for device in found:
        known = by_id.get(device.device_id)
        if known is None:
            by_id[device.device_id] = device
        elif device.found_by[0] not in known.found_by:
            known.found_by.append(device.found_by[0])
    return sorted(by_id.values(), key=lambda d: d.device_id)


async def retained_online(mqtt: MqttConfig, prefixes: Sequence[str], wait_s: float = 1.5) -> dict[str, bool]:
    """The retained `<prefix>/online` of each prefix on the broker (missing: never seen)."""
    seen: dict[str, bool] = {}
    if not prefixes:
        return seen
    async with make_client(mqtt, f"meter-bridge-scan-{os.getpid()}") as client:
        for prefix in prefixes:
            await client.subscribe(f"{prefix}/online", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for message in client.messages:
                    with contextlib.suppress(ParseError):
                        seen[message.topic.removesuffix("/online")] = parse_online(message.payload)
                    if len(seen) == len(prefixes):
                        break
    return seen


async def annotate(found: Sequence[FoundDevice], store: ShellyIdentityStore, mqtt: MqttConfig | None) -> str | None:
    """Fill in `provisioned` and `online`; a warning when the broker could not be asked."""
    for device in found:
        device.provisioned = DEVICE_ID.match(device.device_id) is not None and store.get(device.device_id) is not None
    if mqtt is None:
        return None
    try:
        online = await retained_online(mqtt, [d.prefix for d in found])
    except BrokerError as err:
        return redact(f"cannot ask the MQTT broker which devices are online: {err}")
    for device in found:
        device.online = online.get(device.prefix, False)
    return None


def format_scan(found: Sequence[FoundDevice]) -> str:
    """The scan as a table."""
    header = ("device", "model", "firmware", "host", "found by", "provisioned", "online")

    def yes(value: bool | None) -> str:
        return "-" if value is None else ("yes" if value else "no")

    rows = [
        (d.device_id, d.app or d.model or "-", d.firmware or "-", d.host, "+".join(d.found_by), yes(d.provisioned),
         yes(d.online))
        for d in found
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.append(f"{len(found)} Gen2+ device(s)")
    return "\n".join(lines)


def scan_json(found: Sequence[FoundDevice]) -> str:
    """The scan as JSON (one object per device)."""
    return json.dumps([{**asdict(d), "prefix": d.prefix} for d in found], indent=2)


def add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `shelly scan` and `shelly provision --all-found`."""
    parser.add_argument(
        "--range", dest="ranges", action="append", default=[], metavar="ADDRESSES",
        help="also probe these addresses (`192.168.1.0/24`, `192.168.1.10-192.168.1.60`, one address); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--port",
        dest="ports",
        action="append",
        type=int,
        default=[],
        help="HTTP port to probe (default 80), repeatable",
    )
    parser.add_argument(
        "--mdns-seconds", type=float, default=5.0, help="how long to listen for mDNS announcements (0: no mDNS)"
    )
    parser.add_argument("--interface", dest="interfaces", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--probe-timeout", type=float, default=2.0, help="HTTP timeout per probed address (s)")


async def scan_from_args(args: argparse.Namespace) -> list[FoundDevice]:
    """Run the scan the options describe; raises `ConfigError` for a bad range."""
    addresses = [a for spec in args.ranges for a in parse_range(spec)]
    return await scan(args.mdns_seconds, addresses, args.ports or [80], args.probe_timeout, args.interfaces or None)


def bridge_broker(config: Path) -> MqttConfig:
    """The broker settings of the bridge's config; raises `ConfigError`.

    In a shell in the meter-bridge container (`balena device ssh <uuid> meter-bridge`) the entrypoint's
    MQTT_PASSWORD is not set, only MQTT_PASSWORD_FILE (the broker's file): read it the same way.
    """
    password_file = os.environ.get("MQTT_PASSWORD_FILE")
    if not os.environ.get("MQTT_PASSWORD") and password_file:
        with contextlib.suppress(OSError):
            os.environ["MQTT_PASSWORD"] = Path(password_file).read_text(encoding="utf-8").strip()
    return load_config(config).mqtt


def run_scan(args: argparse.Namespace) -> int:
    """`meter-bridge shelly scan`: exit 0 (also when nothing is found), 2 on bad options."""
    try:
        found = asyncio.run(scan_from_args(args))
        mqtt = None if args.no_broker else bridge_broker(args.config)
    except ConfigError as err:
        print("\n".join(err.problems), file=sys.stderr)
        return 2
    store = ShellyIdentityStore(args.identities) if args.identities else ShellyIdentityStore.from_environment()
    try:
        warning = asyncio.run(annotate(found, store, mqtt))
    except ConfigError as err:
        print("\n".join(err.problems), file=sys.stderr)
        return 2
    if warning:
        print(warning, file=sys.stderr)
    print(scan_json(found) if args.json else format_scan(found))
    return 0


# -- the bridge's MQTT link to the provisioned devices ------------------------------------------------


@dataclass(slots=True)
class OnlineState:
    """What `<prefix>/online` said last, and how many live `true`s came since the link started."""

    online: bool = False
    live_trues: int = 0


class FleetLink:
    """RPC, online state, debug log lines and flex's state over one MQTT client (see the module doc).

    Whoever owns `client` passes every message to `dispatch` (or runs `pump`); `follow(prefix)`
    subscribes to a device before it is asked anything.
    """

    def __init__(self, client: MqttClient, name: str, base_topic: str, rpc_timeout_s: float = 10.0) -> None:
        self.client = client
        self.rpc = ShellyMqttRpc(client, name, rpc_timeout_s)
        self.flex_topic = f"{base_topic}/flex/state"
        self.flex_state: dict[str, Any] | None = None
        self.online: dict[str, OnlineState] = {}
        self.on_debug_line: Callable[[str, bytes], None] | None = None
        self._followed: set[str] = set()
        self._changed = asyncio.Event()

    async def follow(self, prefix: str) -> None:
        """Subscribe to the device's `online` (once)."""
        if prefix not in self._followed:
            self._followed.add(prefix)
            self.online.setdefault(prefix, OnlineState())
            await self.client.subscribe(f"{prefix}/online", qos=1)

    async def follow_flex(self) -> None:
        """Subscribe to flex's retained state."""
        await self.client.subscribe(self.flex_topic, qos=1)

    async def follow_debug(self, prefix: str) -> None:
        """Subscribe to the device's debug log lines (passed to `on_debug_line`)."""
        await self.client.subscribe(f"{prefix}/debug/log", qos=0)

    def dispatch(self, topic: str, payload: bytes, retained: bool = False) -> bool:
        """Take one message; whether it was one of ours."""
        if self.rpc.owns(topic):
            with contextlib.suppress(ParseError):
                self.rpc.handle_reply(topic, payload)
        elif topic == self.flex_topic:
            with contextlib.suppress(ValueError):
                document = json.loads(payload)
                self.flex_state = document if isinstance(document, dict) else None
        elif topic.endswith("/online") and topic.removesuffix("/online") in self.online:
            state = self.online[topic.removesuffix("/online")]
            with contextlib.suppress(ParseError):
                state.online = parse_online(payload)
                if state.online and not retained:
                    state.live_trues += 1
        elif topic.endswith("/debug/log") and self.on_debug_line is not None:
            self.on_debug_line(topic.removesuffix("/debug/log"), payload)
        else:
            return False
        self._changed.set()
        return True

    async def pump(self) -> None:
        """Dispatch every message of the client until cancelled."""
        async for message in self.client.messages:
            self.dispatch(message.topic, message.payload, message.retain)

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `predicate()` holds after some message; False after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self._changed.wait()
        return True

    async def settle(self, seconds: float = 0.5) -> None:
        """Give retained messages of new subscriptions a moment to arrive."""
        await asyncio.sleep(seconds)


@contextlib.asynccontextmanager
async def fleet_link(mqtt: MqttConfig, client_id: str, rpc_timeout_s: float = 10.0) -> Any:
    """`async with fleet_link(cfg.mqtt, "meter-bridge-update-<pid>") as link:` for the CLI commands.

    The RPC `src` name is `client_id`, so two commands at once never take each other's replies.
    Raises `BrokerError` when the broker cannot be reached.
    """
    async with make_client(mqtt, client_id) as client:
        link = FleetLink(client, client_id, mqtt.base_topic, rpc_timeout_s)
        task = asyncio.create_task(link.pump(), name=f"fleet-link-{client_id}")
        try:
            yield link
        finally:
            await stop_tasks([task])
