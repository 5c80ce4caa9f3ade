"""`meter-bridge shelly update`: staged firmware updates of a home's Shellys, over the bridge's broker.

Per device, over RPC on MQTT (no device IPs or admin passwords needed: the broker confines each
device to `shelly/<device id>/#` and the replies stay there): `Shelly.GetDeviceInfo` (installed
`ver`), `Shelly.CheckForUpdate` (`{"stable": {"version", "build_id"}, "beta": {...}}`, only the
stages with a newer build; Shelly Gen2 API, "Shelly" service). A device with nothing newer on the
chosen stage is `current`: running the command again after a successful run changes nothing.

The devices with an update go in two steps: the canary set first (`--canary K`, default 1), then
the rest, never more than `--parallel N` rebooting at once. For each: `Shelly.Update {"stage"}`,
wait for a new live `<prefix>/online` `true` (the device drops off while it flashes and reboots),
then `Shelly.GetDeviceInfo` must show the offered version and `Shelly.GetStatus` must give sane
readings (the parser takes it without issues and finds at least one meter). The first failure
stops the rollout: nothing new starts after it, and a failing canary stops it before the rest.

Demand response: a device whose relay flex holds (an asset away from `normal` in flex's retained
`<base>/flex/state`) is not updated while it does; it is reported `held` and left for a later run.
The mapping from flex asset to device is the asset's configured Shelly `prefix`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ... import __version__
from ...config import BridgeConfig, load_config
from ...errors import BridgeError, BrokerError, ConfigError, ParseError
from ...logutil import redact
from ...model import utc_now
from .config import ShellySourceConfig
from .fleet import FleetLink, bridge_broker, fleet_link
from .identity import TOPIC_ROOT, ShellyIdentityStore, device_prefix
from .parser import MeterNaming, ShellyDeviceParser, parse_device_info

STAGES = ("stable", "beta")


def offered_version(result: Any, stage: str) -> str | None:
    """The version `Shelly.CheckForUpdate` offers on `stage`, or None (nothing newer there)."""
    if not isinstance(result, Mapping):
        raise ParseError("Shelly.CheckForUpdate result is not an object")
    build = result.get(stage)
    if build is None:
        return None
    if not isinstance(build, Mapping) or not isinstance(build.get("version"), str):
        raise ParseError(f"Shelly.CheckForUpdate: `{stage}` has no version")
    return str(build["version"])


def flex_relay_prefixes(config: BridgeConfig) -> dict[str, str]:
    """Flex asset id -> the Shelly prefix it switches (from the configuration)."""
    mapping: dict[str, str] = {}
    for asset in config.flex.assets:
        prefix = getattr(asset.actuator, "prefix", None)
        if getattr(asset.actuator, "type", None) == "shelly" and isinstance(prefix, str):
            mapping[asset.id] = prefix
    return mapping


def held_prefixes(assets: Mapping[str, str], flex_state: Mapping[str, Any] | None) -> set[str]:
    """The prefixes whose relay flex holds: its asset's `state` in `<base>/flex/state` is not `normal`.

    Pure. Without a state document (flex not running, or not yet published) nothing is held.
    """
    if not flex_state or not isinstance(flex_state.get("assets"), Mapping):
        return set()
    held: set[str] = set()
    for asset_id, prefix in assets.items():
        entry = flex_state["assets"].get(asset_id)
        if isinstance(entry, Mapping) and entry.get("state", "normal") != "normal":
            held.add(prefix)
    return held


def sane_readings(status: Any) -> str | None:
    """Why a `Shelly.GetStatus` after an update is not sane, or None when it is.

    Sane: the parser takes it without issues and it carries at least one reading.
    """
    if not isinstance(status, Mapping):
        return "Shelly.GetStatus result is not an object"
    parser = ShellyDeviceParser(MeterNaming("check", "check"))
    readings, issues = parser.full(status, utc_now())
    if issues:
        return f"readings: {issues[0]}"
    if not readings:
        return "no readings after the update"
    return None


@dataclass(slots=True)
class DeviceUpdate:
    """One device in the report (`status`: current, updated, available, held, offline, failed, not_started)."""

    device_id: str
    prefix: str
    status: str = "not_started"
    model: str | None = None
    installed: str | None = None
    offered: str | None = None
    canary: bool = False
    duration_s: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateSettings:
    """How a rollout runs."""

    stage: str = "stable"
    canary: int = 1
    parallel: int = 2
    #: Download, flash and reboot; Shelly's devices take about a minute, slow WiFi more.
    reboot_timeout_s: float = 300.0
    rpc_timeout_s: float = 10.0
    check_only: bool = False


@dataclass(slots=True)
class FleetReport:
    """What `shelly update` did (`--report json` prints it; an operator collects it over balenaCloud)."""

    site: str
    stage: str
    started: str
    finished: str | None = None
    result: str = "ok"
    stopped_by: str | None = None
    devices: list[DeviceUpdate] = field(default_factory=list)
    tool: str = f"meter-bridge {__version__}"

    def to_json(self) -> str:
        """The report as JSON."""
        counts: dict[str, int] = {}
        for device in self.devices:
            counts[device.status] = counts.get(device.status, 0) + 1
        return json.dumps({**asdict(self), "counts": counts}, indent=2)


async def check_device(link: FleetLink, report: DeviceUpdate, stage: str) -> None:
    """Fill in model, installed and offered version; status current/available/offline/failed."""
    try:
        info = parse_device_info(await link.rpc.call(report.prefix, "Shelly.GetDeviceInfo"))
        report.model, report.installed = info.app or info.model, info.firmware
        report.offered = offered_version(await link.rpc.call(report.prefix, "Shelly.CheckForUpdate"), stage)
    except (BridgeError, ParseError) as err:
        state = link.online.get(report.prefix)
        report.status = "failed" if state is not None and state.online else "offline"
        report.error = redact(str(err))
        return
    report.status = "current" if report.offered is None or report.offered == report.installed else "available"


async def update_device(
    link: FleetLink, report: DeviceUpdate, settings: UpdateSettings, held: Iterable[str] = ()
) -> None:
    """Update one device whose `check_device` said `available`; status updated/held/failed."""
    if report.prefix in set(held):
        report.status = "held"
        report.error = "demand response holds its relay: not updated during the event"
        return
    started = time.monotonic()
    state = link.online.get(report.prefix)
    before = state.live_trues if state is not None else 0
    try:
        await link.rpc.call(report.prefix, "Shelly.Update", {"stage": settings.stage})
        back = await link.wait_for(
            lambda: link.online[report.prefix].live_trues > before and link.online[report.prefix].online,
            settings.reboot_timeout_s,
        )
        if not back:
            raise BridgeError(f"{report.prefix}: not back online within {settings.reboot_timeout_s:g} s")
        info = parse_device_info(await link.rpc.call(report.prefix, "Shelly.GetDeviceInfo"))
        if info.firmware != report.offered:
            raise BridgeError(f"{report.prefix}: came back on {info.firmware}, not {report.offered}")
        report.installed = info.firmware
        problem = sane_readings(await link.rpc.call(report.prefix, "Shelly.GetStatus"))
        if problem is not None:
            raise BridgeError(f"{report.prefix}: {problem}")
    except (BridgeError, ParseError) as err:
        report.status, report.error = "failed", redact(str(err))
    else:
        report.status = "updated"
    finally:
        report.duration_s = round(time.monotonic() - started, 1)


async def rollout(
    link: FleetLink,
    prefixes: Sequence[str],
    settings: UpdateSettings,
    held_now: Callable[[], set[str]] = set,
    site: str = "home",
) -> FleetReport:
    """Check every device, then update canaries and the rest (see the module doc).

    `held_now()` gives the prefixes flex holds at this moment (asked before each device).
    """
    report = FleetReport(site, settings.stage, utc_now().isoformat())
    report.devices = [DeviceUpdate(p.removeprefix(f"{TOPIC_ROOT}/"), p) for p in prefixes]
    for device in report.devices:
        await link.follow(device.prefix)
    await link.settle()
    gate = asyncio.Semaphore(max(1, settings.parallel))

    async def check(device: DeviceUpdate) -> None:
        async with gate:
            await check_device(link, device, settings.stage)

    await asyncio.gather(*(check(d) for d in report.devices))
    todo = [d for d in report.devices if d.status == "available"]
    if not settings.check_only and todo:
        canaries, rest = todo[: max(1, settings.canary)], todo[max(1, settings.canary) :]
        for device in canaries:
            device.canary = True
        for batch in (canaries, rest):
            await _run_batch(link, batch, settings, held_now, gate)
            failed = next((d for d in batch if d.status == "failed"), None)
            if failed is not None:
                report.stopped_by = failed.device_id
                break
        for device in todo:
            if device.status == "available":
                device.status = "not_started"
    statuses = {d.status for d in report.devices}
    unfinished = {"offline", "held", "not_started"} | (set() if settings.check_only else {"available"})
    if "failed" in statuses:
        report.result = "failed"
    elif statuses & unfinished:
        report.result = "incomplete"
    report.finished = utc_now().isoformat()
    return report


async def _run_batch(
    link: FleetLink,
    batch: list[DeviceUpdate],
    settings: UpdateSettings,
    held_now: Callable[[], set[str]],
    gate: asyncio.Semaphore,
) -> None:
    stop = asyncio.Event()

    async def one(device: DeviceUpdate) -> None:
        async with gate:
            if stop.is_set():
                return  # an earlier device failed: leave this one as it is
            await update_device(link, device, settings, held_now())
            if device.status == "failed":
                stop.set()

    await asyncio.gather(*(one(d) for d in batch))


def fleet_prefixes(config: BridgeConfig, store: ShellyIdentityStore, only: Sequence[str]) -> list[str]:
    """The home's devices: every provisioned identity plus the configured `shelly/<id>` devices;
    `only` (device ids or prefixes) narrows it."""
    prefixes = {device_prefix(d) for d in store.device_ids()}
    for source in config.sources:
        if isinstance(source, ShellySourceConfig):
            prefixes |= {d.prefix for d in source.devices if d.prefix.startswith(f"{TOPIC_ROOT}/")}
    if only:
        wanted = {o if o.startswith(f"{TOPIC_ROOT}/") else device_prefix(o) for o in only}
        missing = sorted(wanted - prefixes)
        if missing:
            raise ConfigError([f"not a device of this home: {', '.join(missing)}"])
        prefixes &= wanted
    return sorted(prefixes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `meter-bridge shelly update`."""
    parser.add_argument("devices", nargs="*", metavar="DEVICE", help="only these (device id or prefix); default all")
    parser.add_argument("--beta", action="store_true", help="the beta channel (default: stable)")
    parser.add_argument("--canary", type=int, default=1, help="devices updated first, alone (default 1)")
    parser.add_argument("--parallel", type=int, default=2, help="never more devices rebooting at once (default 2)")
    parser.add_argument("--check", action="store_true", help="only report what would be updated")
    parser.add_argument("--reboot-timeout", type=float, default=300.0, help="how long a device may take to return (s)")
    parser.add_argument("--rpc-timeout", type=float, default=10.0, help="how long to wait for an RPC reply (s)")
    parser.add_argument("--report", choices=("table", "json"), default="table", help="output format")
    parser.add_argument("--identities", type=Path, help="directory of the devices' MQTT identities")


def format_report(report: FleetReport) -> str:
    """The report as a table."""
    header = ("device", "model", "installed", "offered", "status", "canary", "s")
    rows = [
        (d.device_id, d.model or "-", d.installed or "-", d.offered or "-", d.status, "yes" if d.canary else "",
         "" if d.duration_s is None else f"{d.duration_s:g}")
        for d in report.devices
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines += [f"{d.device_id}: {d.error}" for d in report.devices if d.error]
    stopped = f" (stopped after {report.stopped_by} failed)" if report.stopped_by else ""
    lines.append(f"result: {report.result}{stopped}")
    return "\n".join(lines)


EXIT_CODES = {"ok": 0, "failed": 1, "incomplete": 3}


def run_update(args: argparse.Namespace) -> int:
    """`meter-bridge shelly update`: exit 0 all current, 1 a failure, 3 some offline/held, 2 bad input."""
    settings = UpdateSettings(
        stage="beta" if args.beta else "stable", canary=args.canary, parallel=args.parallel,
        reboot_timeout_s=args.reboot_timeout, rpc_timeout_s=args.rpc_timeout, check_only=args.check,
    )  # fmt: skip
    try:
        mqtt = bridge_broker(args.config)
        config = load_config(args.config)
        store = (
            ShellyIdentityStore(Path(args.identities)) if args.identities else ShellyIdentityStore.from_environment()
        )
        prefixes = fleet_prefixes(config, store, args.devices)
    except ConfigError as err:
        print("\n".join(err.problems), file=sys.stderr)
        return 2
    flex_assets = flex_relay_prefixes(config)

    async def run() -> FleetReport:
        async with fleet_link(mqtt, f"meter-bridge-update-{os.getpid()}", settings.rpc_timeout_s) as link:
            if flex_assets:
                await link.follow_flex()
            return await rollout(
                link, prefixes, settings, lambda: held_prefixes(flex_assets, link.flex_state), config.site.id
            )

    try:
        report = asyncio.run(run())
    except BrokerError as err:
        print(redact(f"cannot reach the MQTT broker: {err}"), file=sys.stderr)
        return 1
    print(report.to_json() if args.report == "json" else format_report(report))
    return EXIT_CODES[report.result]
