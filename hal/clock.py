"""How far the device's wall clock can be trusted, and what it is set from.

The real backend reads the kernel's NTP state with adjtimex(2) (modes=0, so it
needs no privilege), names the daemon that disciplines the clock and compares
the battery-backed RTC with it; the simulated one is a clock the tests set,
step and skew. Every record of the chain carries this state, so reading it is
cheap and never raises.
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.config import ClockConfig

STA_UNSYNC = 0x0040
TIME_ERROR = 5
NTP_PHASE_LIMIT_US = 16_000_000  # the kernel's error bound after a step (kernel/time/ntp.c)
_SOURCE_TTL_S = 60.0  # the time daemon changes rarely; asking it costs a process
_COMMAND_TIMEOUT_S = 1.0
RTC_DIR = Path("/sys/class/rtc/rtc0")
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")


@dataclass(frozen=True)
class ClockState:
    synced: bool
    max_error_us: int
    est_error_us: int
    source: str
    time_source: str = "unknown"      # chrony, timesyncd, simulated or unknown
    time_server: str | None = None    # the reference the daemon follows
    stratum: int | None = None        # chrony's stratum (0 while it has no reference)
    rtc: str | None = None            # the RTC's driver name
    rtc_offset_s: int | None = None   # RTC minus system clock, whole seconds

    def as_record(self) -> dict[str, object]:
        """Integers, bools and strings for the chain; what is not known is left out."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    def trusted(self, max_error_ms: float) -> bool:
        """Is the time disciplined, as the time daemons themselves mean it? The one rule for
        the clock alarm and the self-check.

        The kernel's error bound must be under its own limit (past 16 s it sets STA_UNSYNC
        itself) and under `max_error_ms`; and either the kernel reports the clock
        disciplined, or chrony says it has a reference: chrony clears STA_UNSYNC only
        with `rtcsync`, so without it the kernel says unsynchronised while chrony keeps
        the clock right and keeps the bound small.
        """
        bound_ok = 0 <= self.max_error_us < min(NTP_PHASE_LIMIT_US, max_error_ms * 1000)
        return bound_ok and (self.synced or self._chrony_has_reference)

    @property
    def _chrony_has_reference(self) -> bool:
        """chrony's tracking report gives stratum 0 while it is not synchronised."""
        return self.time_source == "chrony" and self.stratum is not None and \
            0 < self.stratum < 16

    def describe(self) -> str:
        """What the alarm and the self-check show the officer and the custodian."""
        verdict = "synchronised" if self.synced else "not synchronised"
        daemon = f", {self.time_source} stratum {self.stratum}" if self.stratum is not None \
            else ""
        return f"{verdict} ({self.source}){daemon}, max error {self.max_error_us / 1000:g} ms"


class Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class Timex(ctypes.Structure):
    """struct timex of <sys/timex.h> (glibc), long-sized fields as the C ABI has them."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time", Timeval), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


Adjtimex = Callable[[Timex], int]
"""adjtimex(2) as glibc gives it: fills the struct, returns the clock state (TIME_OK ...
TIME_ERROR), and raises OSError where the C call returns -1."""


def _libc_adjtimex() -> Adjtimex:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

    def adjtimex(timex: Timex) -> int:
        result = int(libc.adjtimex(ctypes.byref(timex)))
        if result < 0:
            raise OSError(ctypes.get_errno(), "adjtimex failed")
        return result

    return adjtimex


class KernelClock:
    """The kernel's view through adjtimex(2); synchronised means NTP (or PPS) disciplines it.

    The time source comes from chrony (`chronyc -c tracking`) or systemd-timesyncd
    (`timedatectl show-timesync`, /run/systemd/timesync/synchronized); the RTC
    from the rtc class in sysfs (Documentation/ABI/testing/sysfs-class-rtc).
    `adjtimex` is the system call unless a test gives recorded answers.
    """

    def __init__(self, rtc_dir: Path = RTC_DIR, adjtimex: Adjtimex | None = None) -> None:
        self._adjtimex = adjtimex or _libc_adjtimex()
        self._rtc_dir = rtc_dir
        self._source: tuple[float, tuple[str, str | None, int | None]] | None = None

    def now_ns(self) -> int:
        return time.time_ns()

    def state(self) -> ClockState:
        timex = Timex()  # modes = 0: read only, no privilege needed
        try:
            result = self._adjtimex(timex)
        except OSError as exc:
            synced, max_error, est_error = False, -1, -1
            source = f"adjtimex failed: errno {exc.errno}"
        else:
            synced = result != TIME_ERROR and not timex.status & STA_UNSYNC
            max_error, est_error, source = int(timex.maxerror), int(timex.esterror), "kernel"
        time_source, server, stratum = self._time_source()
        rtc, rtc_offset = _read_rtc(self._rtc_dir)
        return ClockState(synced, max_error, est_error, source, time_source, server, stratum,
                          rtc, rtc_offset)

    def _time_source(self) -> tuple[str, str | None, int | None]:
        cached = self._source
        if cached is None or time.monotonic() >= cached[0]:
            cached = (time.monotonic() + _SOURCE_TTL_S, _ask_time_daemon())
            self._source = cached
        return cached[1]


def _ask_time_daemon() -> tuple[str, str | None, int | None]:
    """(daemon, server, stratum) of whatever disciplines the clock, as far as it can be known."""
    tracking = _run("chronyc", "-c", "tracking")
    if tracking:
        fields = next(csv.reader([tracking.splitlines()[0]]))
        if len(fields) > 2:
            stratum = int(fields[2]) if fields[2].isdigit() else None
            return "chrony", fields[1] or None, stratum
    server = _run("timedatectl", "show-timesync", "--property=ServerName", "--value")
    if server or TIMESYNC_FLAG.exists():
        return "timesyncd", server or None, None
    return "unknown", None, None


def _run(*command: str) -> str | None:
    """The command's output when it exists and succeeds, else None."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=_COMMAND_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _read_rtc(folder: Path) -> tuple[str | None, int | None]:
    """(name, RTC minus system clock in s); the offset is None while the RTC holds no valid time."""
    try:
        name = (folder / "name").read_text(encoding="utf-8").strip()
    except OSError:
        return None, None
    try:
        since_epoch = int((folder / "since_epoch").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return name, None
    return name, since_epoch - int(time.time())


class SimulatedClock:
    """A clock the tests set, step and skew, standing in for NTP on the simulated device.

    It follows the kernel: a step leaves it unsynchronised with the 16 s error
    bound (ntp_clear), and a skew grows the bound by the drift it builds up until
    the bound passes 16 s, where it counts as unsynchronised.
    """

    def __init__(self, synced: bool = True, max_error_us: int = 1000) -> None:
        self.synced = synced
        self.max_error_us = max_error_us
        self.skew_ppm = 0.0
        self._offset_s = 0.0
        self._skew_since = time.monotonic()

    def _fold(self) -> None:
        """Move the drift built up so far into the offset and the error bound."""
        now = time.monotonic()
        drift_s = self.skew_ppm * 1e-6 * (now - self._skew_since)
        self._offset_s += drift_s
        self.max_error_us += round(abs(drift_s) * 1e6)
        self._skew_since = now

    @property
    def offset_s(self) -> float:
        """now_ns() minus the real clock, in seconds: steps, settings and drift."""
        drift_s = self.skew_ppm * 1e-6 * (time.monotonic() - self._skew_since)
        return self._offset_s + drift_s

    @offset_s.setter
    def offset_s(self, seconds: float) -> None:
        """A wrong clock that still believes itself synchronised."""
        self._fold()
        self._offset_s = seconds

    def step(self, seconds: float) -> None:
        """Jump by `seconds`, as settimeofday(2) does."""
        self._fold()
        self._offset_s += seconds
        self.synced = False
        self.max_error_us = NTP_PHASE_LIMIT_US

    def skew(self, ppm: float) -> None:
        """From now on run `ppm` parts per million fast (negative: slow)."""
        self._fold()
        self.skew_ppm = ppm

    def sync(self, max_error_us: int = 1000) -> None:
        """NTP disciplines the clock again: on true time, synchronised, no skew."""
        self._skew_since = time.monotonic()
        self._offset_s = 0.0
        self.skew_ppm = 0.0
        self.synced = True
        self.max_error_us = max_error_us

    def now_ns(self) -> int:
        return time.time_ns() + round(self.offset_s * 1e9)

    def state(self) -> ClockState:
        growth_us = round(abs(self.skew_ppm) * (time.monotonic() - self._skew_since))
        max_error = self.max_error_us + growth_us
        synced = self.synced and max_error <= NTP_PHASE_LIMIT_US
        return ClockState(synced, max_error, max_error // 2, "simulated",
                          time_source="simulated")


def open_clock(config: ClockConfig) -> KernelClock | SimulatedClock:
    return SimulatedClock() if config.backend == "sim" else KernelClock()


def set_wall_clock(clock: KernelClock | SimulatedClock, target_ns: int) -> int:
    """Step the wall clock to `target_ns`; returns the step in ns (target minus before).

    The kernel clock is set with clock_settime(CLOCK_REALTIME), which needs
    CAP_SYS_TIME (PermissionError without it) and, like settimeofday, leaves the
    clock unsynchronised until NTP takes over; the simulated clock is stepped.
    """
    step_ns = target_ns - clock.now_ns()
    if isinstance(clock, SimulatedClock):
        clock.step(step_ns / 1e9)
    else:
        time.clock_settime_ns(time.CLOCK_REALTIME, target_ns)
    return step_ns
