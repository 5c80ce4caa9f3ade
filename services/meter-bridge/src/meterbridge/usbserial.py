"""Find a USB serial adapter by its USB ids, the way udev and Home Assistant's USB matchers do.

Tty numbers change when a stick is replugged (ttyACM0 becomes ttyACM1 while the old node is
still held open) and a home may have several adapters, so a source that knows its device's USB
vendor and product ids looks them up in sysfs on every (re)connect instead of trusting a name.
Reads only sysfs attributes (`idVendor`, `idProduct`, `manufacturer`, `product`); never raises.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Where the kernel lists ttys, and where their nodes are (the container's entrypoint keeps the
#: nodes of USB serial adapters there; the tests point both at a fake tree).
SYSFS_TTY_DIR = Path(os.environ.get("SYSFS_TTY_DIR", "/sys/class/tty"))
DEV_DIR = Path(os.environ.get("DEV_DIR", "/dev"))


@dataclass(frozen=True, slots=True)
class UsbId:
    """One USB device a source accepts: ids in hex (any case) and a glob on the manufacturer."""

    vendor: str
    product: str
    manufacturer: str = "*"

    def __str__(self) -> str:
        return f"{self.vendor.lower()}:{self.product.lower()}"


def _attribute(directory: Path, name: str) -> str:
    try:
        return (directory / name).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _usb_device(tty: Path) -> Path | None:
    """The sysfs directory of the USB device behind `tty` (first parent with `idVendor`)."""
    try:
        directory = (tty / "device").resolve(strict=True)
    except OSError:
        return None
    for candidate in (directory, *directory.parents):
        if (candidate / "idVendor").is_file():
            return candidate
    return None


def find_usb_serial(
    wanted: Sequence[UsbId], sysfs_tty_dir: Path | None = None, dev_dir: Path | None = None
) -> Path | None:
    """The /dev path of the first USB serial adapter (ttyACM*, ttyUSB*) matching one of `wanted`,
    in the order of `wanted` then of tty names; None when none is plugged in."""
    sysfs = sysfs_tty_dir or SYSFS_TTY_DIR
    dev = dev_dir or DEV_DIR
    try:
        ttys = sorted(p for p in sysfs.iterdir() if p.name.startswith(("ttyACM", "ttyUSB")))
    except OSError:
        return None
    devices = [(tty, _usb_device(tty)) for tty in ttys]
    for usb_id in wanted:
        for tty, device in devices:
            if device is None:
                continue
            if (
                _attribute(device, "idVendor").lower() == usb_id.vendor.lower()
                and _attribute(device, "idProduct").lower() == usb_id.product.lower()
                and fnmatch.fnmatch(_attribute(device, "manufacturer").lower(), usb_id.manufacturer.lower())
            ):
                return dev / tty.name
    return None
