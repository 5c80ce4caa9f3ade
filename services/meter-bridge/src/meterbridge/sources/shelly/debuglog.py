"""`meter-bridge shelly logs DEVICE --for 10m`: collect a device's debug log over the bridge's broker.

Shelly Gen2 API, "Debug Logs": with `Sys.SetConfig {"config": {"debug": {"mqtt": {"enable": true}}}}`
the device publishes each log line on `<prefix>/debug/log` (it needs no restart). The command
subscribes first, turns it on, writes every line to a file for the window, and turns it off
again at the end, on Ctrl-C (SIGINT), SIGTERM and SIGHUP (the `balena device ssh` session dropped). It always turns it
off, even if it was on before: a device left logging by an interrupted earlier run (or a kill -9)
is put right by the next run, so running the command is idempotent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from ...errors import BridgeError, ConfigError
from ...logutil import redact
from .fleet import FleetLink, bridge_broker, fleet_link
from .identity import DEVICE_ID, TOPIC_ROOT, device_prefix

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h)?$")
#: Where logs go by default in the container (the persistent volume), else the working directory.
DEFAULT_LOG_DIR = Path("/data/shelly-logs")


def parse_duration(text: str) -> float:
    """`90`, `90s`, `10m`, `1.5h` -> seconds; raises `ConfigError`."""
    match = _DURATION.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError([f"--for {text}: expected a positive duration like 90s, 10m or 1h"])
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]


def device_to_prefix(device: str) -> str:
    """A device id (`shellypro3em-0cb815fc11f8`) or its prefix (`shelly/<id>`) -> the prefix."""
    device_id = device.removeprefix(f"{TOPIC_ROOT}/")
    if not DEVICE_ID.match(device_id):
        raise ConfigError([f"{device}: not a Shelly device id (`shelly<model>-<12 hex digits>`)"])
    return device_prefix(device_id)


async def set_debug(link: FleetLink, prefix: str, enable: bool) -> None:
    """Turn the device's MQTT debug log on or off."""
    await link.rpc.call(prefix, "Sys.SetConfig", {"config": {"debug": {"mqtt": {"enable": enable}}}})


async def collect(link: FleetLink, prefix: str, out: IO[bytes], seconds: float, stop: asyncio.Event) -> int:
    """Debug on, lines into `out` until `seconds` pass or `stop` is set, debug off; the line count.

    Raises `BridgeError` when the device cannot be reached to turn it on; turning it off is tried
    even when the collection ends with an error or a cancellation.
    """
    lines = 0

    def take(source: str, payload: bytes) -> None:
        nonlocal lines
        if source == prefix:
            out.write(payload.rstrip(b"\n") + b"\n")
            lines += 1

    link.on_debug_line = take
    await link.follow_debug(prefix)
    try:
        await set_debug(link, prefix, True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()
    finally:
        # shielded: a second Ctrl-C must not leave the device logging
        await asyncio.shield(set_debug(link, prefix, False))
        out.flush()
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `meter-bridge shelly logs`."""
    parser.add_argument("device", metavar="DEVICE", help="device id (`shellyplus1pm-a8032ab12345`) or its prefix")
    parser.add_argument("--for", dest="duration", default="10m", help="how long to collect (`90s`, `10m`, `1h`)")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"file to write (default {DEFAULT_LOG_DIR}/<device>-<UTC time>.log, or ./ without /data)",
    )
    parser.add_argument("--rpc-timeout", type=float, default=10.0, help="how long to wait for an RPC reply (s)")


def _default_out(prefix: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    directory = DEFAULT_LOG_DIR if DEFAULT_LOG_DIR.parent.is_dir() else Path.cwd()
    return directory / f"{prefix.removeprefix(f'{TOPIC_ROOT}/')}-{stamp}.log"


def run_logs(args: argparse.Namespace) -> int:
    """`meter-bridge shelly logs`: exit 0 when the log was collected and debug is off again."""
    try:
        seconds = parse_duration(args.duration)
        prefix = device_to_prefix(args.device)
        mqtt = bridge_broker(args.config)
    except ConfigError as err:
        print("\n".join(err.problems), file=sys.stderr)
        return 2
    out_path: Path = args.out or _default_out(prefix)

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the SSH session dropped
            loop.add_signal_handler(signum, stop.set)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with out_path.open("ab") as out:
            async with fleet_link(mqtt, f"meter-bridge-logs-{os.getpid()}", args.rpc_timeout) as link:
                print(f"collecting the debug log of {prefix} into {out_path} for {seconds:g} s (Ctrl-C ends it)",
                      file=sys.stderr, flush=True)  # fmt: skip
                lines = await collect(link, prefix, out, seconds, stop)
        print(f"{lines} lines from {prefix} in {out_path}; debug log turned off again", file=sys.stderr)
        return 0

    try:
        return asyncio.run(run())
    except (BridgeError, OSError) as err:
        print(redact(f"shelly logs {args.device}: {err}"), file=sys.stderr)
        return 1
