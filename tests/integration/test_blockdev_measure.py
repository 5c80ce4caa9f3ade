"""The write benches' card figure (tests/helpers/blockdev.py) counts what reached the block device.

bench_sd_writes.py and bench_recorder_repack.py report bytes per day "to the card" from a loop
device's sector counter; docs/benchmarks.md's write budget rests on it. Here a known pattern of
writes is made and the counter must show it: each 1 KB write into a distinct 4 KB block of a file
already on the device costs one 4 KB block, whatever the page cache counted in `write_bytes`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.blockdev import LoopUnavailableError, LoopVolume

BLOCK = 4096


@pytest.fixture
def card(tmp_path: Path) -> Iterator[LoopVolume]:
    try:
        volume = LoopVolume(tmp_path / "card", tmp_path / "card.img", size_mb=64).mount()
    except LoopUnavailableError as error:
        pytest.skip(f"no loop device here: {error}")
    yield volume
    volume.unmount()


def test_small_writes_cost_whole_blocks_and_nothing_else(card: LoopVolume) -> None:
    path = card.mountpoint / "file.bin"
    with path.open("wb") as handle:
        handle.write(os.urandom(4 << 20))
        handle.flush()
        os.fsync(handle.fileno())
    before = card.written()
    descriptor = os.open(path, os.O_RDWR)
    try:
        for block in range(0, 1024, 10):  # 103 distinct 4 KB blocks, 1 KB into each
            os.pwrite(descriptor, os.urandom(1024), block * BLOCK + 1024)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    sent = card.written() - before
    blocks = len(range(0, 1024, 10))
    # the data blocks, plus at most a few journal and metadata blocks (the inode's times)
    assert blocks * BLOCK <= sent <= (blocks + 16) * BLOCK, sent


def test_nothing_written_counts_nothing(card: LoopVolume) -> None:
    before = card.written()
    (card.mountpoint / "file.bin").write_bytes(b"x" * 100)
    after_one = card.written()
    assert after_one > before  # the write reached the device...
    assert card.written() == after_one  # ...and a sync with nothing dirty sends nothing
