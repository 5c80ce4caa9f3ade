"""A directory on its own ext4 filesystem on a loop device, to count the bytes that reach the "card".

Why not `/proc/<pid>/io` `write_bytes`: Linux counts it when a page-cache folio is first dirtied,
the whole folio, and since 6.16 ext4 caches files in large folios. On this machine's 6.18 a file
written and fsynced, then changed by 200 random 1 KB writes, counted its whole 10 MB; the same
writes counted 0.8 MB once the file had been read back 4 KB at a time, and the loop device under
the file system (4 KB blocks) was sent 0.82 MB in every case. `write_bytes` also leaves out the
file system's own journal and metadata, which the card does receive. The sectors a block device
was sent (`/sys/block/<dev>/stat`, field 7) are what the card would be sent, on any kernel.

The file system is made as balenaOS's data partition is (ext4, where the engine keeps volumes),
with 4 KB blocks as on an SD card of today, and its inode tables and journal initialised at
`mkfs` time (`lazy_itable_init=0,lazy_journal_init=0`, as balenaOS formats its partitions), so
no background initialisation writes during a measurement. Needs root and a free loop device.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class LoopUnavailableError(RuntimeError):
    """No loop device could be set up here (not root, no /dev/loop-control, or none free)."""


@dataclass
class LoopVolume:
    """`mountpoint` backed by an ext4 image file `image` (sparse, `size_mb`) through a loop device."""

    mountpoint: Path
    image: Path
    size_mb: int = 2048
    device: str = ""

    def mount(self) -> LoopVolume:
        """Make the file system and mount it on `mountpoint` (made if missing; emptied of lost+found).

        The mount's root is root:root 0755, as a named volume the engine makes."""
        if os.geteuid() != 0 or not Path("/dev/loop-control").exists() or shutil.which("mkfs.ext4") is None:
            raise LoopUnavailableError("needs root, /dev/loop-control and mkfs.ext4")
        self.image.parent.mkdir(parents=True, exist_ok=True)
        with self.image.open("wb") as image:
            image.truncate(self.size_mb << 20)
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(self.image)],
            check=True,
            capture_output=True,
        )
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        mounted = subprocess.run(
            ["mount", "-o", "loop", str(self.image), str(self.mountpoint)], capture_output=True, text=True
        )
        if mounted.returncode != 0:
            raise LoopUnavailableError(f"mount -o loop failed: {mounted.stderr.strip()}")
        try:
            source = subprocess.run(
                ["findmnt", "-n", "-o", "SOURCE", "--mountpoint", str(self.mountpoint)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            self.device = Path(source).name
            (self.mountpoint / "lost+found").rmdir()
            self.mountpoint.chmod(0o755)
        except (OSError, subprocess.CalledProcessError):
            # not left mounted for the caller, who has no volume to unmount
            subprocess.run(["umount", str(self.mountpoint)], capture_output=True)
            self.image.unlink(missing_ok=True)
            raise
        return self

    def sync(self) -> None:
        """Write back everything dirty on this file system now (`syncfs`), journal included."""
        subprocess.run(["sync", "-f", str(self.mountpoint)], check=True)

    def sectors_bytes(self) -> int:
        """Bytes the loop device has been sent to write since it was set up (sectors x 512)."""
        fields = Path(f"/sys/block/{self.device}/stat").read_text().split()
        return int(fields[6]) * 512

    def written(self) -> int:
        """`sectors_bytes` after a `sync`: everything written so far has reached the device."""
        self.sync()
        return self.sectors_bytes()

    def unmount(self) -> None:
        """Unmount (lazily if busy: the loop device goes when the last user does) and delete the image."""
        if self.device:
            done = subprocess.run(["umount", str(self.mountpoint)], capture_output=True)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)
            self.device = ""
        with contextlib.suppress(FileNotFoundError):
            self.image.unlink()
