"""A fake sysfs tree of USB serial adapters, laid out as the kernel lays out the real one, so that
the entrypoints' usb-serial.sh and meterbridge.usbserial can be run against plugged and unplugged
sticks here (no USB device can be plugged into a test machine).

    ROOT/devices/usb1/1-N/                    idVendor idProduct manufacturer product [serial]
    ROOT/devices/usb1/1-N/1-N:1.0/            bInterfaceNumber
      cdc_acm:  1-N:1.0/tty/ttyACMk/dev       (and ROOT/class/tty/ttyACMk -> it, device -> 1-N:1.0)
      usb-serial: 1-N:1.0/ttyUSBk/port_number, 1-N:1.0/ttyUSBk/tty/ttyUSBk/dev (device -> ttyUSBk)

`dev` holds "major:minor"; a test gives a pseudo-terminal's numbers so that the node the
entrypoint makes opens that pseudo-terminal.
"""

from __future__ import annotations

import itertools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

_BUS_PORTS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class UsbAdapter:
    """What a USB serial stick tells the kernel about itself."""

    vendor_id: str
    product_id: str
    manufacturer: str
    product: str
    serial: str | None = None
    #: cdc_acm (ttyACM) or a usb-serial driver such as ftdi_sio/cp210x (ttyUSB)
    acm: bool = True


# The strings and ids published for these devices (Home Assistant's USB matchers; udev's by-id
# names seen for them).
EMU2 = UsbAdapter("04b4", "0003", "Rainforest Automation, Inc.", "RFA-Z105-2 HW2.7.3 EMU-2")
FTDI_CABLE = UsbAdapter("0403", "6001", "FTDI", "FT232R USB UART", "A10KZP4Q", acm=False)
SONOFF_ZBDONGLE_E = UsbAdapter(
    "1a86", "55d4", "ITEAD", "SONOFF Zigbee 3.0 USB Dongle Plus V2", "20231234567", acm=False
)
SONOFF_ZBDONGLE_P = UsbAdapter("10c4", "ea60", "ITead", "Sonoff Zigbee 3.0 USB Dongle Plus", "c0e8c7f4f1", acm=False)
CP2102_GENERIC = UsbAdapter("10c4", "ea60", "Silicon Labs", "CP2102 USB to UART Bridge Controller", "0001", acm=False)


class FakeSysfs:
    """ROOT/class/tty (pass as SYSFS_TTY_DIR) with adapters plugged in and out."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tty_dir = root / "class" / "tty"
        self.tty_dir.mkdir(parents=True, exist_ok=True)
        self._devices: dict[str, Path] = {}

    def plug(self, adapter: UsbAdapter, tty: str, numbers: tuple[int, int]) -> None:
        """`adapter` appears as `tty` (ttyACMn / ttyUSBn) with device numbers `numbers`."""
        device = self.root / "devices" / "usb1" / f"1-{next(_BUS_PORTS)}"
        device.mkdir(parents=True)
        for name, value in (
            ("idVendor", adapter.vendor_id),
            ("idProduct", adapter.product_id),
            ("manufacturer", adapter.manufacturer),
            ("product", adapter.product),
            ("serial", adapter.serial),
        ):
            if value is not None:
                (device / name).write_text(value + "\n")
        interface = device / f"{device.name}:1.0"
        interface.mkdir()
        (interface / "bInterfaceNumber").write_text("00\n")
        if adapter.acm:
            tty_device = interface
        else:
            tty_device = interface / tty
            tty_device.mkdir()
            (tty_device / "port_number").write_text("0\n")
        node = tty_device / "tty" / tty
        node.mkdir(parents=True)
        (node / "dev").write_text(f"{numbers[0]}:{numbers[1]}\n")
        (node / "device").symlink_to(os.path.relpath(tty_device, node))
        (self.tty_dir / tty).symlink_to(os.path.relpath(node, self.tty_dir))
        self._devices[tty] = device

    def unplug(self, tty: str) -> None:
        """The adapter behind `tty` is gone (sysfs entries vanish with it)."""
        (self.tty_dir / tty).unlink()
        shutil.rmtree(self._devices.pop(tty))


def pty_numbers(path: str) -> tuple[int, int]:
    """(major, minor) of a pseudo-terminal's node, for `FakeSysfs.plug`."""
    rdev = os.stat(path).st_rdev
    return os.major(rdev), os.minor(rdev)
