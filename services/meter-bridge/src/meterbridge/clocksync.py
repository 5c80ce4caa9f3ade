"""Whether the kernel says the wall clock is synchronized (NTP), read with `adjtimex(2)`.

`adjtimex` with `modes = 0` only reads the kernel's clock-discipline state: no capability is
needed, and Docker's (balenaEngine's) default seccomp profile allows it unconditionally
(moby/moby `profiles/seccomp/default.json`: `adjtimex`, `clock_adjtime` are in the first,
unconditional SCMP_ACT_ALLOW list; only `clock_settime`, `settimeofday`, `stime` need
CAP_SYS_TIME). The state is the host kernel's, so a container sees what the host's NTP daemon
set.

What "synchronized" means here is the conjunction of the two readings in use:

- the kernel's own flag: `STA_UNSYNC` (0x0040) clear in `status`, hence a result other than
  `TIME_ERROR` (5). chrony clears it when synchronised only with `rtcsync` on Linux (chrony
  `sys_timex.c`, `set_sync_status`: "On Linux clear the UNSYNC flag only if rtcsync is
  enabled"), and balenaOS's `chrony.conf` has `rtcsync` (balena-os/meta-balena
  `meta-balena-common/recipes-core/chrony/files/chrony.conf`);
- systemd's `NTPSynchronized` (what `timedatectl` shows as "System clock synchronized"):
  `maxerror < 16000000` µs (systemd `src/timedate/timedated.c`, `ntp_synced()`; older
  systemd read `STA_UNSYNC` instead). The kernel adds 500 µs to `maxerror` every second and
  sets `STA_UNSYNC` itself when it reaches 16 s, so a daemon that stopped answering is
  noticed by both.

Requiring both errs on the side of "not known": a clock taken as right when it is not would
put readings in the wrong year, while one not known right only makes `ClockGate` wait as it
did before this module. Where the call is missing (not Linux, no libc symbol) or fails, the
answer is None (unknown) and nothing raises.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass

_LOGGER = logging.getLogger(__name__)

#: adjtimex's result while the clock is not synchronized (`<sys/timex.h>`).
TIME_ERROR = 5
#: `status` bit: the clock is not synchronized (`<sys/timex.h>`).
STA_UNSYNC = 0x0040
#: The kernel's NTP_PHASE_LIMIT in µs: `maxerror` stops here when nothing disciplines the clock.
MAX_ERROR_US = 16_000_000


class _Timex(ctypes.Structure):
    """`struct timex` of the C library's `adjtimex` (glibc and musl: `long` fields, 11 spare ints)."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        # the header's 11 spare ints, and room to spare should a C library's layout be larger
        ("_spare", ctypes.c_int * 32),
    )


@dataclass(frozen=True, slots=True)
class KernelClock:
    """What `adjtimex(2)` said: its result (clock state), `status` bits and `maxerror` (µs)."""

    result: int
    status: int
    maxerror_us: int

    @property
    def synced(self) -> bool:
        """Whether both the kernel's flag and systemd's rule say synchronized (module docstring)."""
        return self.result != TIME_ERROR and not self.status & STA_UNSYNC and self.maxerror_us < MAX_ERROR_US


def read_kernel_clock() -> KernelClock | None:
    """The kernel's clock state, read only (`modes = 0`); None where `adjtimex` is missing or fails."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError) as err:
        _LOGGER.debug("adjtimex is not available here: %s", err)
        return None
    adjtimex.argtypes = (ctypes.POINTER(_Timex),)
    adjtimex.restype = ctypes.c_int
    timex = _Timex()  # zeroed: modes = 0 reads and changes nothing
    result = adjtimex(ctypes.byref(timex))
    if result < 0:
        _LOGGER.debug("adjtimex failed: errno %d", ctypes.get_errno())
        return None
    return KernelClock(result, timex.status, timex.maxerror)


def kernel_clock_synced() -> bool | None:
    """True when the kernel says the wall clock is synchronized, False when not, None if unknown."""
    state = read_kernel_clock()
    return None if state is None else state.synced
