"""USB serial adapters in the privileged meter-bridge and zigbee2mqtt containers:
services/usb-serial/usb-serial.sh (run with POSIX sh, as both entrypoints source it) and
meterbridge.usbserial, against a fake sysfs laid out as the kernel's (helpers.usb_sysfs): nodes
and udev-style /dev/serial/by-id links follow plugging and replugging, and each service finds
only its own stick by USB ids."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from helpers.release import REPO
from helpers.usb_sysfs import (
    EMU2,
    FTDI_CABLE,
    SONOFF_ZBDONGLE_P,
    FakeSysfs,
)
from meterbridge.sources.emu2.source import EMU2_USB_IDS
from meterbridge.usbserial import find_usb_serial

LIB = REPO / "services" / "usb-serial" / "usb-serial.sh"
EMU2_BY_ID = "usb-Rainforest_Automation__Inc._RFA-Z105-2_HW2.7.3_EMU-2-if00"
FTDI_BY_ID = "usb-FTDI_FT232R_USB_UART_A10KZP4Q-if00-port0"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes needs root (as in the container)")


def run_lib(sysfs: FakeSysfs, dev: Path, script: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "SYSFS_TTY_DIR": str(sysfs.tty_dir), "DEV_DIR": str(dev)}
    return subprocess.run(
        ["sh", "-c", f'. "{LIB}"; {script}'], env=env, input=stdin, capture_output=True, text=True, timeout=30
    )


@needs_root
def test_sync_makes_nodes_and_udev_by_id_links_and_follows_a_replug(tmp_path: Path) -> None:
    sysfs, dev = FakeSysfs(tmp_path / "sys"), tmp_path / "dev"
    dev.mkdir()
    sysfs.plug(EMU2, "ttyACM0", (166, 0))
    sysfs.plug(FTDI_CABLE, "ttyUSB0", (188, 0))
    result = run_lib(sysfs, dev, "usb_serial_sync")
    assert result.returncode == 0, result.stderr
    node = (dev / "ttyACM0").stat()
    assert stat.S_ISCHR(node.st_mode)
    assert (os.major(node.st_rdev), os.minor(node.st_rdev)) == (166, 0)
    assert os.readlink(dev / "serial" / "by-id" / EMU2_BY_ID) == "../../ttyACM0"
    # a usb-serial driver's port gets udev's -portN suffix
    assert os.readlink(dev / "serial" / "by-id" / FTDI_BY_ID) == "../../ttyUSB0"

    # replugged while the old tty was still held open: the stick comes back as ttyACM1
    sysfs.unplug("ttyACM0")
    sysfs.plug(EMU2, "ttyACM1", (166, 1))
    assert run_lib(sysfs, dev, "usb_serial_sync").returncode == 0
    assert os.readlink(dev / "serial" / "by-id" / EMU2_BY_ID) == "../../ttyACM1"
    assert not (dev / "ttyACM0").exists(), "the node of an adapter gone is removed"
    node = (dev / "ttyACM1").stat()
    assert (os.major(node.st_rdev), os.minor(node.st_rdev)) == (166, 1)

    # unplugged: no link to a device that is not there
    sysfs.unplug("ttyUSB0")
    assert run_lib(sysfs, dev, "usb_serial_sync").returncode == 0
    assert sorted(p.name for p in (dev / "serial" / "by-id").iterdir()) == [EMU2_BY_ID]


@needs_root
def test_sync_replaces_a_node_whose_numbers_changed(tmp_path: Path) -> None:
    sysfs, dev = FakeSysfs(tmp_path / "sys"), tmp_path / "dev"
    dev.mkdir()
    os.mknod(dev / "ttyUSB0", 0o660 | stat.S_IFCHR, os.makedev(188, 7))
    sysfs.plug(FTDI_CABLE, "ttyUSB0", (188, 0))
    assert run_lib(sysfs, dev, "usb_serial_sync").returncode == 0
    rdev = (dev / "ttyUSB0").stat().st_rdev
    assert (os.major(rdev), os.minor(rdev)) == (188, 0)


def test_the_bridge_finds_the_emu2_by_usb_ids(tmp_path: Path) -> None:
    sysfs, dev = FakeSysfs(tmp_path / "sys"), tmp_path / "dev"
    assert find_usb_serial(EMU2_USB_IDS, sysfs.tty_dir, dev) is None
    sysfs.plug(FTDI_CABLE, "ttyUSB0", (188, 0))
    sysfs.plug(SONOFF_ZBDONGLE_P, "ttyUSB1", (188, 1))
    assert find_usb_serial(EMU2_USB_IDS, sysfs.tty_dir, dev) is None, "never another service's stick"
    sysfs.plug(EMU2, "ttyACM3", (166, 3))
    assert find_usb_serial(EMU2_USB_IDS, sysfs.tty_dir, dev) == dev / "ttyACM3"
    sysfs.unplug("ttyACM3")
    sysfs.plug(EMU2, "ttyACM4", (166, 4))
    assert find_usb_serial(EMU2_USB_IDS, sysfs.tty_dir, dev) == dev / "ttyACM4"
    assert find_usb_serial(EMU2_USB_IDS, tmp_path / "no-sysfs", dev) is None


@needs_root
def test_a_stick_unplugged_during_a_pass_does_not_end_the_hot_plug_loop(tmp_path: Path) -> None:
    """Both entrypoints run `set -eu`; a pass that reads a stick's sysfs entries while it goes away
    meets a failing read. The loop must carry on (it once ended, and a replugged EMU-2 never got its
    by-id link back). The stick is plugged and unplugged while 300 passes run under errexit, as in
    the entrypoints (here the old code ended within a few cycles); then it is plugged as ttyACM1 and
    the same shell, still alive, links it."""
    sysfs, dev = FakeSysfs(tmp_path / "sys"), tmp_path / "dev"
    dev.mkdir()
    passes_done, replugged = tmp_path / "passes-done", tmp_path / "replugged"
    script = (
        f'set -eu; . "{LIB}"; i=0; while [ $i -lt 300 ]; do usb_serial_sync 2>/dev/null; i=$((i+1)); done; '
        f'touch "{passes_done}"; while [ ! -e "{replugged}" ]; do sleep 0.05; done; usb_serial_sync; echo alive'
    )
    env = {"PATH": os.environ["PATH"], "SYSFS_TTY_DIR": str(sysfs.tty_dir), "DEV_DIR": str(dev)}
    loop = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    cycles = 0
    try:
        while loop.poll() is None and not passes_done.exists():
            sysfs.plug(EMU2, "ttyACM0", (166, 0))
            sysfs.unplug("ttyACM0")
            cycles += 1
        sysfs.plug(EMU2, "ttyACM1", (166, 1))
        replugged.touch()
        out, _ = loop.communicate(timeout=60)
    finally:
        if loop.poll() is None:
            loop.kill()
    assert loop.returncode == 0, f"the loop ended during {cycles} plug/unplug cycles"
    assert out.strip() == "alive"
    assert os.readlink(dev / "serial" / "by-id" / EMU2_BY_ID) == "../../ttyACM1"
