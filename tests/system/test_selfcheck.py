"""The pre-shift self-check: each item failing and passing, sealed into the chain, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.device.daemon import Daemon
from agent.device.selfcheck import SelfCheckResult, Status
from agent.evidence.chain import read_bodies
from hal.gpio import Health
from tests.support.device import running_daemon, wait_for


def sealed_checks(store: Path) -> list[dict]:
    bodies = read_bodies(store / "chain.jsonl")
    return [body["payload"] for body in bodies if body["type"] == "self_check"]


def item(result: SelfCheckResult, name: str):
    return next(i for i in result.items if i.name == name)


def check(daemon: Daemon) -> SelfCheckResult:
    result = daemon.selfcheck()
    assert sealed_checks(daemon.store.root)[-1] == result.as_record()
    return result


def test_a_healthy_simulated_device_passes_and_seals_it(write_config) -> None:
    with running_daemon(write_config()) as daemon:
        result = check(daemon)
        assert result.overall is Status.PASS, result.render()
        assert {i.name for i in result.items} == {
            "camera", "microphone", "speaker", "button and LEDs", "battery", "storage",
            "store writable", "clock", "device key", "chain tail", "export deadline",
            "location"}
        wait_for(lambda: daemon.health is Health.OK, what="health ok")


def test_low_battery_fails_and_the_leds_show_a_fault(write_config, tmp_path: Path) -> None:
    with running_daemon(write_config()) as daemon:
        (tmp_path / "store" / "sim" / "power_supply" / "BAT0" / "capacity").write_text("5\n")
        result = check(daemon)
        battery = item(result, "battery")
        assert battery.status is Status.FAIL and battery.value.startswith("5 %")
        assert result.overall is Status.FAIL
        red = daemon.controls.factory.pin(daemon.config.gpio.record_led_pin)
        seen = set()
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            seen.add(red.state)
            time.sleep(0.01)
        assert seen == {True, False}, "a fault in standby flickers the red LED"


def test_unsynchronised_clock_fails(write_config) -> None:
    with running_daemon(write_config()) as daemon:
        daemon.clock.synced = False
        daemon.clock.max_error_us = 16_000_000
        clock = item(check(daemon), "clock")
        assert clock.status is Status.FAIL
        assert clock.value == "not synchronised (simulated), max error 16000 ms"


def test_missing_key_and_tampered_tail_fail(write_config, tmp_path: Path) -> None:
    with running_daemon(write_config()) as daemon:
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 1, what="a segment")
        segment = sorted((tmp_path / "store" / "sealed").glob("*.ts"))[0]
        segment.chmod(0o644)
        data = bytearray(segment.read_bytes())
        data[1000] ^= 0x01
        segment.write_bytes(bytes(data))
        (tmp_path / "store" / "keys" / "device.key").unlink()
        result = check(daemon)
        assert item(result, "device key").status is Status.FAIL
        tail = item(result, "chain tail")
        assert tail.status is Status.FAIL and "SHA-256 differs" in tail.value


def test_overdue_footage_fails(write_config, tmp_path: Path) -> None:
    with running_daemon(write_config(export_deadline_hours=0.0003)) as daemon:
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 1, what="a segment")
        time.sleep(1.2)
        overdue = item(check(daemon), "export deadline")
        assert overdue.status is Status.FAIL and overdue.value.startswith("oldest sealed footage")


@pytest.fixture
def small_filesystem(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_nearly_full_storage_fails(write_config, small_filesystem: Path) -> None:
    with running_daemon(write_config(store=small_filesystem / "store")) as daemon:
        storage = item(check(daemon), "storage")
        assert storage.status is Status.FAIL and "GB free" in storage.value


def test_cli_exit_codes_and_sealed_record(write_config, tmp_path: Path) -> None:
    config = write_config(languages='["en"]')  # one language: what is checked, not said
    ok = subprocess.run([sys.executable, "-m", "agent", "selfcheck", "--config", str(config)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.rstrip().endswith("self-check: PASS")
    capacity = tmp_path / "store" / "sim" / "power_supply" / "BAT0" / "capacity"
    capacity.write_text("60\n")  # about 6.7 h: more than half the 10 h shift, less than all
    warn = subprocess.run([sys.executable, "-m", "agent", "selfcheck", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert warn.returncode == 1, warn.stdout + warn.stderr
    assert "WARN  battery" in warn.stdout
    capacity.write_text("5\n")
    bad = subprocess.run([sys.executable, "-m", "agent", "selfcheck", "--json", "--config",
                          str(config)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert json.loads(bad.stdout)["overall"] == "fail"
    assert [c["overall"] for c in sealed_checks(tmp_path / "store")] == ["pass", "warn", "fail"]
