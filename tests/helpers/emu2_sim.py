"""A simulated Rainforest EMU-2 on a pseudo-terminal, for tests and chaos runs.

The device end is the pty master; the bridge opens the slave through a symlink
(`sim.port`) exactly as it opens `/dev/serial/by-id/...` on the appliance. The
simulator answers the commands of the Rainforest XML API, pushes demand and summation
on the schedule `set_schedule` asks for, and can misbehave like the real device:

- `chaos=True`: pushed fragments are sometimes cut off by the next one, a command
  reply is sometimes written in the middle of a push (the push's tail follows it), and
  raw 0xFF junk is sometimes written between fragments;
- `unplug()` closes the pty and removes the symlink (the USB device went away);
  `replug()` makes a new pty and points the symlink at it;
- `push_demand=False`: the device ignores the demand schedule (only polls are answered).

Fragment shapes follow the Rainforest XML API: hex numbers, signed 32-bit demand,
summations with Multiplier/Divisor, timestamps in seconds since 2000-01-01 UTC;
`CurrentPeriodUsage` (CurrentUsage since StartDate) and `LastPeriodUsage` (LastUsage from
StartDate to EndDate) with the fields aioraven's data classes read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import select
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

EPOCH_2000 = 946_684_800  # 2000-01-01T00:00:00Z as a Unix time
_COMMAND = re.compile(rb"<Command>(.*?)</Command>", re.IGNORECASE | re.DOTALL)
_FIELD = re.compile(rb"<(\w+)>([^<]*)</\1>")


def hex32(value: int) -> str:
    """`value` as the device writes a signed 32-bit number (`0xFFFFFFF0` for -16)."""
    return f"0x{value & 0xFFFFFFFF:08x}"


def fragment(root: str, fields: list[tuple[str, str]]) -> bytes:
    """One fragment as the device writes it: indented children, CRLF line ends."""
    body = "".join(f"  <{name}>{value}</{name}>\r\n" for name, value in fields)
    return f"<{root}>\r\n{body}</{root}>\r\n".encode("cp1252")


@dataclass
class MeterState:
    """What the simulated meter reads; change it between pushes from any thread."""

    demand_w: float = 512.0
    delivered_kwh: float = 6613.405
    received_kwh: float = 0.0
    price: float = 0.1234
    currency: int = 840
    link_strength_pct: int = 100
    status: str = "Connected"
    #: The device's accumulation periods (`get_current_period_usage` / `get_last_period_usage`).
    period_kwh: float = 412.25
    period_start: int = 1_793_491_200  # 2026-11-01T00:00:00Z, Unix time
    last_period_kwh: float = 903.5
    last_period_start: int = 1_790_812_800  # 2026-10-01T00:00:00Z


@dataclass
class Emu2Simulator:
    """One simulated device under `workdir`; see the module docstring."""

    workdir: Path
    meter: MeterState = field(default_factory=MeterState)
    chaos: bool = False
    #: In chaos mode, the chance of each kind of misbehaviour per push.
    chaos_rate: float = 0.15
    seed: int = 0
    push_demand: bool = True
    device_mac: str = "0xd8d5b90000001a2b"
    meter_mac: str = "0x00078100011a4c66"
    #: Pushes before `set_schedule` asks for others (the device's own defaults, seconds).
    demand_interval_s: float = 8.0
    summation_interval_s: float = 240.0
    commands: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = str(self.workdir / "ttyEMU2")
        self._rng = random.Random(self.seed)  # noqa: S311 - test chaos, not crypto
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inbox = b""
        self.pushes = 0
        self.plugged = False

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> Emu2Simulator:
        """Plug the device in and start answering and pushing."""
        self.replug()
        self._thread = threading.Thread(target=self._run, name="emu2-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Unplug and stop the simulator thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.unplug()

    def unplug(self) -> None:
        """Close the pty and remove the symlink: reads on the bridge side fail at once."""
        with self._lock:
            self.plugged = False
            for fd in (self._master, self._slave):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._master = self._slave = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.port)

    def replug(self) -> None:
        """A new pty behind the same symlink (the USB device came back)."""
        with self._lock:
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo: what the device writes must not come back as a command
            os.set_blocking(master, False)
            tmp = self.port + ".new"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(os.ttyname(slave), tmp)
            os.replace(tmp, self.port)
            self._master, self._slave = master, slave
            self._inbox = b""
            self.plugged = True
            now = time.monotonic()
            self._next_demand = now + 0.2
            self._next_summation = now + 0.3

    # -- fragments ----------------------------------------------------------------------

    def _ts(self) -> str:
        return hex32(int(time.time()) - EPOCH_2000)

    def demand_fragment(self) -> bytes:
        """`InstantaneousDemand` of the current demand (kW = raw / 1000)."""
        raw = round(self.meter.demand_w)
        return fragment(
            "InstantaneousDemand",
            [
                ("DeviceMacId", self.device_mac),
                ("MeterMacId", self.meter_mac),
                ("TimeStamp", self._ts()),
                ("Demand", hex32(raw)),
                ("Multiplier", "0x00000001"),
                ("Divisor", "0x000003e8"),
                ("DigitsRight", "0x03"),
                ("DigitsLeft", "0x06"),
                ("SuppressLeadingZero", "Y"),
            ],
        )

    def summation_fragment(self) -> bytes:
        """`CurrentSummationDelivered` of the current totals (kWh = raw / 1000)."""
        return fragment(
            "CurrentSummationDelivered",
            [
                ("DeviceMacId", self.device_mac),
                ("MeterMacId", self.meter_mac),
                ("TimeStamp", self._ts()),
                ("SummationDelivered", f"0x{round(self.meter.delivered_kwh * 1000):016x}"),
                ("SummationReceived", f"0x{round(self.meter.received_kwh * 1000):016x}"),
                ("Multiplier", "0x00000001"),
                ("Divisor", "0x000003e8"),
                ("DigitsRight", "0x03"),
                ("DigitsLeft", "0x0f"),
                ("SuppressLeadingZero", "Y"),
            ],
        )

    def _reply(self, name: str, fields: dict[str, str]) -> bytes:
        meter = self.meter
        if name == "get_instantaneous_demand":
            return self.demand_fragment()
        if name == "get_current_summation_delivered":
            return self.summation_fragment()
        if name == "get_current_price":
            return fragment(
                "PriceCluster",
                [
                    ("DeviceMacId", self.device_mac),
                    ("MeterMacId", self.meter_mac),
                    ("TimeStamp", self._ts()),
                    ("Price", hex32(round(meter.price * 10_000))),
                    ("Currency", f"0x{meter.currency:04x}"),
                    ("TrailingDigits", "0x04"),
                    ("Tier", "0x01"),
                    ("StartTime", "0xffffffff"),
                    ("Duration", "0xffff"),
                    ("RateLabel", "Set by User"),
                ],
            )
        if name == "get_current_period_usage":
            return fragment(
                "CurrentPeriodUsage",
                [
                    ("DeviceMacId", self.device_mac),
                    ("MeterMacId", self.meter_mac),
                    ("TimeStamp", self._ts()),
                    ("CurrentUsage", hex32(round(meter.period_kwh * 1000))),
                    ("Multiplier", "0x00000001"),
                    ("Divisor", "0x000003e8"),
                    ("DigitsRight", "0x02"),
                    ("DigitsLeft", "0x06"),
                    ("SuppressLeadingZero", "Y"),
                    ("StartDate", hex32(meter.period_start - EPOCH_2000)),
                ],
            )
        if name == "get_last_period_usage":
            return fragment(
                "LastPeriodUsage",
                [
                    ("DeviceMacId", self.device_mac),
                    ("MeterMacId", self.meter_mac),
                    ("LastUsage", hex32(round(meter.last_period_kwh * 1000))),
                    ("Multiplier", "0x00000001"),
                    ("Divisor", "0x000003e8"),
                    ("DigitsRight", "0x02"),
                    ("DigitsLeft", "0x06"),
                    ("SuppressLeadingZero", "Y"),
                    ("StartDate", hex32(meter.last_period_start - EPOCH_2000)),
                    ("EndDate", hex32(meter.period_start - EPOCH_2000)),
                ],
            )
        if name == "get_connection_status":
            return fragment(
                "ConnectionStatus",
                [
                    ("DeviceMacId", self.device_mac),
                    ("MeterMacId", self.meter_mac),
                    ("Status", meter.status),
                    ("Description", "Successfully Joined" if meter.status == "Connected" else "Rejoining"),
                    ("ExtPanId", "0x000781000086d0fe"),
                    ("Channel", "20"),
                    ("ShortAddr", "0xe1aa"),
                    ("LinkStrength", f"0x{meter.link_strength_pct:02x}"),
                ],
            )
        if name == "get_device_info":
            # some units pad strings with raw 0xFF bytes
            return fragment(
                "DeviceInfo",
                [
                    ("DeviceMacId", self.device_mac),
                    ("InstallCode", "0x8ba7f1dee6c4f5cc"),
                    ("LinkKey", "0x2b26f9124113b1e200db6e0aa1a7be9b"),
                    ("FWVersion", "2.0.0 (7400)"),
                    ("HWVersion", "2.7.3"),
                    ("ImageType", "0x2201"),
                    ("Manufacturer", "Rainforest Automation, Inc."),
                    ("ModelId", "Z105-2-EMU2-LEDD_JM"),
                    ("DateCode", "2013103023220630"),
                ],
            ).replace(b"</ModelId>", b"\xff\xff</ModelId>")
        if name == "get_meter_list":
            return fragment("MeterList", [("DeviceMacId", self.device_mac), ("MeterMacId", self.meter_mac)])
        if name == "set_schedule":
            seconds = int(fields.get("frequency", "0x8"), 16)
            if fields.get("event", "").lower() == "demand":
                self.demand_interval_s = seconds
                self._next_demand = min(self._next_demand, time.monotonic() + seconds)
            elif fields.get("event", "").lower() == "summation":
                self.summation_interval_s = seconds
                self._next_summation = min(self._next_summation, time.monotonic() + seconds)
        return b""

    # -- the device loop ----------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._master is None or not data:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._master, data)

    def _push(self, data: bytes, replies: list[bytes]) -> None:
        """Write a pushed fragment, misbehaving now and then in chaos mode."""
        self.pushes += 1
        if self.chaos and self._rng.random() < self.chaos_rate:
            self._write(b"\xff" * self._rng.randint(1, 8))
        if self.chaos and replies and self._rng.random() < max(0.5, self.chaos_rate):
            cut = self._rng.randint(1, len(data) - 1)
            self._write(data[:cut] + replies.pop(0) + data[cut:])  # a reply lands inside the push
        elif self.chaos and self._rng.random() < self.chaos_rate:
            self._write(data[: self._rng.randint(1, len(data) - 1)])  # clobbered by what follows
        else:
            self._write(data)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                master = self._master
            if master is None:
                time.sleep(0.02)
                continue
            try:
                readable, _, _ = select.select([master], [], [], 0.02)
            except (OSError, ValueError):
                continue
            with self._lock:
                if self._master != master:
                    continue
                replies: list[bytes] = []
                if readable:
                    with contextlib.suppress(BlockingIOError, OSError):
                        self._inbox += os.read(master, 4096)
                    for match in _COMMAND.finditer(self._inbox):
                        fields = {k.decode().lower(): v.decode().strip() for k, v in _FIELD.findall(match.group(1))}
                        name = fields.get("name", "")
                        self.commands.append(name)
                        replies.append(self._reply(name, fields))
                    end = self._inbox.rfind(b"</Command>")
                    if end >= 0:
                        self._inbox = self._inbox[end + len("</Command>") :]
                    self._inbox = self._inbox[-4096:]
                replies = [reply for reply in replies if reply]
                now = time.monotonic()
                if now >= self._next_demand:
                    self._next_demand = now + self.demand_interval_s
                    if self.push_demand:
                        self._push(self.demand_fragment(), replies)
                if now >= self._next_summation:
                    self._next_summation = now + self.summation_interval_s
                    self._push(self.summation_fragment(), replies)
                for reply in replies:
                    self._write(reply)

    async def wait_for_command(self, name: str, timeout: float = 30.0, after: int = 0) -> None:
        """Wait until command `name` was received (at index >= `after`); TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while name not in self.commands[after:]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"command {name} not received; got {self.commands[after:]}")
            await asyncio.sleep(0.02)
