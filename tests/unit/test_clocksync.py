"""The kernel's NTP status read with adjtimex(2) (`meterbridge.clocksync`), here and where it is missing."""

from __future__ import annotations

import ctypes
import platform
import struct
import sys

import pytest

from meterbridge import clocksync
from meterbridge.clocksync import MAX_ERROR_US, STA_UNSYNC, TIME_ERROR, KernelClock, kernel_clock_synced

#: adjtimex's number and `struct timex` offsets (64-bit: int modes padded to 8, then longs) per machine.
_SYSCALLS = {"x86_64": 159, "aarch64": 171}


def _raw_adjtimex() -> tuple[int, int, int]:
    """adjtimex(2) called by number, not through the C library's wrapper: result, status, maxerror."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(512)  # zeroed: modes = 0, read only
    result = libc.syscall(ctypes.c_long(_SYSCALLS[platform.machine()]), buf)
    assert result >= 0, ctypes.get_errno()
    (maxerror,) = struct.unpack_from("=q", buf.raw, 24)
    (status,) = struct.unpack_from("=i", buf.raw, 40)
    return result, status, maxerror


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() not in _SYSCALLS, reason="adjtimex by number: 64-bit Linux"
)
def test_the_reader_gives_what_the_kernel_says() -> None:
    before = _raw_adjtimex()
    state = clocksync.read_kernel_clock()
    after = _raw_adjtimex()
    assert state is not None
    # the kernel adds 500 us a second to maxerror (until 16 s): read between two raw calls
    assert (before[0], before[1]) == (state.result, state.status) == (after[0], after[1])
    assert before[2] <= state.maxerror_us <= after[2]
    raw_synced = before[0] != TIME_ERROR and not before[1] & STA_UNSYNC and before[2] < MAX_ERROR_US
    assert kernel_clock_synced() is raw_synced


@pytest.mark.parametrize(
    ("result", "status", "maxerror_us", "synced"),
    [
        (0, 0x2001, 20_000, True),  # TIME_OK, STA_PLL | STA_NANO, 20 ms: chrony with rtcsync, synchronized
        (TIME_ERROR, STA_UNSYNC, MAX_ERROR_US, False),  # nothing disciplines the clock (this machine's case)
        (TIME_ERROR, STA_UNSYNC | 0x2001, 20_000, False),  # chrony without rtcsync: the kernel's flag stays
        (0, 0x2001, MAX_ERROR_US, False),  # the daemon stopped answering 9 hours ago (systemd's rule)
    ],
)
def test_synchronized_needs_the_kernels_flag_and_systemds_rule(
    result: int, status: int, maxerror_us: int, synced: bool
) -> None:
    assert KernelClock(result, status, maxerror_us).synced is synced


def test_where_adjtimex_is_missing_or_fails_the_answer_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    class _NoAdjtimex:
        def __init__(self, *_: object, **__: object) -> None:
            pass

    monkeypatch.setattr(clocksync.ctypes, "CDLL", _NoAdjtimex)
    assert kernel_clock_synced() is None

    class _Failing:
        def __init__(self, *_: object, **__: object) -> None:
            self.adjtimex = lambda _timex: -1

    monkeypatch.setattr(clocksync.ctypes, "CDLL", _Failing)
    assert kernel_clock_synced() is None

    def _no_libc(*_: object, **__: object) -> None:
        raise OSError("no C library")

    monkeypatch.setattr(clocksync.ctypes, "CDLL", _no_libc)
    assert kernel_clock_synced() is None
