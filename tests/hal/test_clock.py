"""The clock state: the kernel's, its time source and RTC; and a simulated clock that steps."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agent.config import ClockConfig
from hal.clock import (
    NTP_PHASE_LIMIT_US,
    STA_UNSYNC,
    TIME_ERROR,
    ClockState,
    KernelClock,
    SimulatedClock,
    Timex,
    open_clock,
)


def fake_command(folder: Path, name: str, output: str, status: int = 0) -> None:
    folder.mkdir(exist_ok=True)
    script = folder / name
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\nexit {status}\n")
    script.chmod(0o755)


def only_types_the_chain_admits(record: dict[str, object]) -> bool:
    return all(type(value) in (bool, int, str) for value in record.values())


def test_kernel_clock_state_never_raises_here(tmp_path: Path) -> None:
    clock = KernelClock(rtc_dir=tmp_path / "no-rtc")
    state = clock.state()
    assert state.source == "kernel" and isinstance(state.synced, bool)
    assert state.time_source in ("chrony", "timesyncd", "unknown")
    assert state.rtc is None and "rtc" not in state.as_record()
    assert only_types_the_chain_admits(state.as_record())
    assert abs(clock.now_ns() - time.time_ns()) < 1_000_000_000


def test_chrony_reference_and_stratum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_command(tmp_path / "bin", "chronyc",
                 "C0A80001,ntp.example.org,2,1767225600.123456,-0.000012,0.000003,0.000020,"
                 "-1.234,0.001,0.015,0.012,0.001,64.2,Normal")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    state = KernelClock(rtc_dir=tmp_path / "no-rtc").state()
    assert (state.time_source, state.time_server, state.stratum) == ("chrony", "ntp.example.org", 2)
    assert state.as_record()["time_server"] == "ntp.example.org"


def test_timesyncd_when_chrony_does_not_answer(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fake_command(tmp_path / "bin", "chronyc", "506 Cannot talk to daemon", status=1)
    fake_command(tmp_path / "bin", "timedatectl", "time.example.net")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    state = KernelClock(rtc_dir=tmp_path / "no-rtc").state()
    assert (state.time_source, state.time_server, state.stratum) == (
        "timesyncd", "time.example.net", None)


def test_rtc_name_and_offset(tmp_path: Path) -> None:
    rtc = tmp_path / "rtc0"
    rtc.mkdir()
    (rtc / "name").write_text("rtc-ds1307 1-0068\n")
    (rtc / "since_epoch").write_text(f"{int(time.time()) - 42}\n")
    state = KernelClock(rtc_dir=rtc).state()
    assert state.rtc == "rtc-ds1307 1-0068"
    assert state.rtc_offset_s is not None and -43 <= state.rtc_offset_s <= -41
    (rtc / "since_epoch").unlink()  # an RTC that has never been set refuses the read
    record = KernelClock(rtc_dir=rtc).state().as_record()
    assert record["rtc"] == "rtc-ds1307 1-0068" and "rtc_offset_s" not in record


def test_simulated_clock_steps_like_the_kernel() -> None:
    clock = SimulatedClock()
    assert clock.state().as_record() == {"synced": True, "max_error_us": 1000,
                                         "est_error_us": 500, "source": "simulated",
                                         "time_source": "simulated"}
    clock.step(30.0)
    assert abs(clock.now_ns() - time.time_ns() - 30_000_000_000) < 100_000_000
    state = clock.state()
    assert not state.synced and state.max_error_us == NTP_PHASE_LIMIT_US

    clock.sync()
    assert clock.state().synced and abs(clock.now_ns() - time.time_ns()) < 100_000_000

    clock.offset_s = -5.0  # wrong, and unaware of it
    assert clock.state().synced
    assert abs(clock.now_ns() - time.time_ns() + 5_000_000_000) < 100_000_000


def test_simulated_clock_skew_drifts_and_grows_the_error_bound() -> None:
    clock = SimulatedClock()
    clock.skew(100_000)  # 10 % fast
    start_real, start_sim = time.time_ns(), clock.now_ns()
    time.sleep(0.3)
    gained_s = (clock.now_ns() - start_sim - (time.time_ns() - start_real)) / 1e9
    assert 0.02 <= gained_s <= 0.1
    assert 0.02 <= clock.offset_s <= 0.1
    bound = clock.state().max_error_us
    assert 1000 + 20_000 <= bound <= 1000 + 100_000

    clock.skew(0)  # the drift so far stays in the offset and the bound
    frozen = clock.offset_s
    time.sleep(0.05)
    assert clock.offset_s == frozen and clock.state().max_error_us == 1000 + round(frozen * 1e6)

    clock.skew(100_000_000)  # 100 s per second: the bound passes 16 s within 0.2 s
    time.sleep(0.2)
    assert not clock.state().synced


def test_open_clock() -> None:
    assert isinstance(open_clock(ClockConfig(backend="sim")), SimulatedClock)
    assert isinstance(open_clock(ClockConfig(backend="kernel")), KernelClock)


# --- Recorded adjtimex(2) answers of the two time daemons' poll cycles ---------------------
#
# Built from the sources that write them. systemd-timesyncd (src/timesync/timesyncd-manager.c,
# manager_adjust_clock) calls clock_adjtime with ADJ_STATUS | ADJ_NANO | ADJ_MAXERROR |
# ADJ_ESTERROR and a zeroed struct: status = STA_PLL (STA_UNSYNC cleared), maxerror =
# esterror = 0; the kernel adds STA_NANO for ADJ_NANO. Its poll interval doubles from 32 s
# up to PollIntervalMaxSec = 2048 s. chrony (sys_timex.c, set_sync_status) writes maxerror
# and esterror from its own error estimate at every clock update (polls 64 s to 1024 s by
# default, maxpoll 10) and clears STA_UNSYNC only with `rtcsync`. Between updates the kernel
# (kernel/time/ntp.c, second_overflow) adds MAXFREQ / NSEC_PER_USEC = 500 µs per second
# to maxerror; past NTP_PHASE_LIMIT (16 s) it clamps it and sets STA_UNSYNC. adjtimex
# returns TIME_ERROR (5) whenever STA_UNSYNC (or STA_CLOCKERR) is set, else TIME_OK (0).

STA_PLL, STA_NANO, STA_CLOCKERR = 0x0001, 0x2000, 0x1000
TIME_OK = 0
MAXERROR_GROWTH_US_PER_S = 500


def kernel_after(seconds: int, status: int, maxerror_us: int,
                 esterror_us: int) -> tuple[int, int, int, int]:
    """(return, status, maxerror, esterror) `seconds` after a daemon wrote the values."""
    maxerror = maxerror_us + MAXERROR_GROWTH_US_PER_S * seconds
    if maxerror > NTP_PHASE_LIMIT_US:
        maxerror, status = NTP_PHASE_LIMIT_US, status | STA_UNSYNC
    result = TIME_ERROR if status & (STA_UNSYNC | STA_CLOCKERR) else TIME_OK
    return result, status, maxerror, esterror_us


def poll_cycle(status: int, maxerror_us: int, esterror_us: int,
               interval_s: int) -> list[tuple[int, int, int, int]]:
    """Samples from just after one update to just before the next."""
    return [kernel_after(t, status, maxerror_us, esterror_us)
            for t in (0, 1, interval_s // 4, interval_s // 2, interval_s - 1)]


TIMESYNCD_CYCLES = [sample for interval in (32, 64, 128, 256, 512, 1024, 2048)
                    for sample in poll_cycle(STA_PLL | STA_NANO, 0, 0, interval)]
# chrony after makestep (ADJ_SETOFFSET | ADJ_NANO sets STA_NANO); its estimate ~25 ms.
CHRONY_CYCLES = [sample for interval in (64, 128, 256, 512, 1024)
                 for sample in poll_cycle(STA_NANO, 25_000, 600, interval)]
CHRONY_WITHOUT_RTCSYNC = [sample for interval in (64, 1024)
                          for sample in poll_cycle(STA_NANO | STA_UNSYNC, 25_000, 600, interval)]


class RecordedKernel:
    """adjtimex as glibc's contract has it: fills the caller's struct timex and returns the
    clock state; the values are the ones recorded above, one per call."""

    def __init__(self, samples: list[tuple[int, int, int, int]]) -> None:
        self.samples = iter(samples)

    def __call__(self, timex: Timex) -> int:
        assert timex.modes == 0, "the clock is only read, never adjusted"
        result, timex.status, timex.maxerror, timex.esterror = next(self.samples)
        return result


def verdicts(samples: list[tuple[int, int, int, int]], tmp_path: Path) -> list[bool]:
    clock = KernelClock(rtc_dir=tmp_path / "no-rtc", adjtimex=RecordedKernel(samples))
    limit = ClockConfig().max_error_ms
    return [clock.state().trusted(limit) for _ in samples]


def daemon_says(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, chrony: str | None) -> None:
    """chronyc answering `chrony` (its -c tracking line), or no chrony and timesyncd."""
    bin_dir = tmp_path / "bin"
    if chrony is None:
        fake_command(bin_dir, "chronyc", "506 Cannot talk to daemon", status=1)
        fake_command(bin_dir, "timedatectl", "time.example.net")
    else:
        fake_command(bin_dir, "chronyc", chrony)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


CHRONY_SYNCED = ("C0A80001,ntp.example.org,3,1767225600.1,-0.000012,0.000003,0.000020,"
                 "-1.234,0.001,0.015,0.012,0.001,1024.0,Normal")
CHRONY_UNSYNCED = "00000000,,0,0.0,0.0,0.0,0.0,-1.234,0.0,0.0,0.0,0.0,0.0,Not synchronised"


def test_timesyncd_poll_cycles_up_to_2048_s_are_no_alarm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon_says(monkeypatch, tmp_path, None)
    assert max(sample[2] for sample in TIMESYNCD_CYCLES) == 1_023_500  # past the old 500 ms
    assert verdicts(TIMESYNCD_CYCLES, tmp_path) == [True] * len(TIMESYNCD_CYCLES)


def test_chrony_poll_cycles_are_no_alarm_with_or_without_rtcsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon_says(monkeypatch, tmp_path, CHRONY_SYNCED)
    assert verdicts(CHRONY_CYCLES, tmp_path) == [True] * len(CHRONY_CYCLES)
    assert all(result == TIME_ERROR for result, *_ in CHRONY_WITHOUT_RTCSYNC)
    assert verdicts(CHRONY_WITHOUT_RTCSYNC, tmp_path) == [True] * len(CHRONY_WITHOUT_RTCSYNC)


@pytest.mark.parametrize(("chrony", "sample"), [
    # Never synchronised since boot: the kernel's initial state (ntp.c: STA_UNSYNC, 16 s).
    (None, (TIME_ERROR, STA_UNSYNC, NTP_PHASE_LIMIT_US, NTP_PHASE_LIMIT_US)),
    # timesyncd lost its server 9 h ago: the kernel clamped the bound and set STA_UNSYNC.
    (None, kernel_after(9 * 3600, STA_PLL | STA_NANO, 0, 0)),
    # A small bound but STA_UNSYNC, and no daemon that vouches for the clock.
    (None, (TIME_ERROR, STA_NANO | STA_UNSYNC, 30_000, 600)),
    # The kernel reports a clock error.
    (None, (TIME_ERROR, STA_PLL | STA_CLOCKERR, 30_000, 600)),
    # chrony just started after timesyncd (status STA_UNSYNC, old small bound), no reference.
    (CHRONY_UNSYNCED, (TIME_ERROR, STA_UNSYNC, 40_000, 0)),
    # chrony synchronised but the kernel's bound has run out (its updates stopped).
    (CHRONY_SYNCED, kernel_after(9 * 3600, STA_NANO | STA_UNSYNC, 25_000, 600)),
], ids=["boot", "timesyncd-offline-9h", "unsync-flag", "clockerr", "chrony-no-reference",
        "chrony-bound-run-out"])
def test_an_unsynchronised_kernel_still_alarms(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chrony: str | None,
        sample: tuple[int, int, int, int]) -> None:
    daemon_says(monkeypatch, tmp_path, chrony)
    assert verdicts([sample], tmp_path) == [False]


def test_a_failed_adjtimex_is_not_synchronised(tmp_path: Path) -> None:
    def refused(_timex: Timex) -> int:
        raise OSError(1, "Operation not permitted")  # EPERM: a seccomp filter without @clock

    state = KernelClock(rtc_dir=tmp_path / "no-rtc", adjtimex=refused).state()
    assert (state.synced, state.max_error_us, state.source) == (False, -1,
                                                               "adjtimex failed: errno 1")
    assert not state.trusted(ClockConfig().max_error_ms)


def test_a_stricter_bound_from_the_config_still_applies() -> None:
    state = ClockState(True, 600_000, 0, "kernel", "timesyncd")
    assert state.trusted(16000) and not state.trusted(500)
    assert state.describe() == "synchronised (kernel), max error 600 ms"
