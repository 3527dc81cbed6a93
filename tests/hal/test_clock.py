"""The clock state: the kernel's, its time source and RTC; and a simulated clock that steps."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agent.config import ClockConfig
from hal.clock import NTP_PHASE_LIMIT_US, KernelClock, SimulatedClock, open_clock


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
