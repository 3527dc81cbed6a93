"""How far the device's wall clock can be trusted, as the kernel sees it.

The real backend reads the kernel's NTP state with adjtimex(2) (modes=0, so it
needs no privilege); the simulated one is a clock the tests can set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


@dataclass(frozen=True)
class ClockState:
    synced: bool
    max_error_us: int
    est_error_us: int
    source: str

    def as_record(self) -> dict[str, object]:
        return {"synced": self.synced, "max_error_us": self.max_error_us,
                "est_error_us": self.est_error_us, "source": self.source}


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex of <sys/timex.h> (glibc), long-sized fields as the C ABI has them."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time", _Timeval), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


class KernelClock:
    """The kernel's view through adjtimex(2); synchronised means NTP (or PPS) disciplines it."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

    def state(self) -> ClockState:
        timex = _Timex()
        result = self._libc.adjtimex(ctypes.byref(timex))
        if result < 0:
            return ClockState(False, -1, -1, f"adjtimex failed: errno {ctypes.get_errno()}")
        synced = result != _TIME_ERROR and not timex.status & _STA_UNSYNC
        return ClockState(synced, int(timex.maxerror), int(timex.esterror), "kernel")


class SimulatedClock:
    """A clock state the tests set, standing in for NTP on the simulated device."""

    def __init__(self, synced: bool = True, max_error_us: int = 1000) -> None:
        self.synced = synced
        self.max_error_us = max_error_us

    def state(self) -> ClockState:
        return ClockState(self.synced, self.max_error_us, self.max_error_us // 2, "simulated")
