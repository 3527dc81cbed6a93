"""`bodycam run` as a real process: the control socket, the simulated button, SIGTERM, the demo."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.evidence.chain import read_bodies
from tests.support.device import spawn_daemon, trigger_start, wait_for

BODYCAM = [sys.executable, "-m", "agent"]
SYS_TGKILL = {"x86_64": 234, "aarch64": 131, "armv7l": 268}.get(os.uname().machine)


def bodycam(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BODYCAM, *args], capture_output=True, text=True, timeout=60,
                          check=check)


def status(config: Path) -> dict:
    return json.loads(bodycam("status", "--json", "--config", str(config)).stdout)


def chain_types(store: Path) -> list[tuple[str, dict]]:
    bodies = read_bodies(store / "chain.jsonl")
    return [(body["type"], body["payload"]) for body in bodies]


def test_daemon_runs_is_controlled_and_seals_on_sigterm(write_config, tmp_path: Path) -> None:
    config = write_config(realtime="true", segment_seconds=1.0)
    store = tmp_path / "store"
    daemon = spawn_daemon(config, store)
    try:
        socket_mode = stat.S_IMODE(os.stat(store / "control.sock").st_mode)
        assert socket_mode & 0o077 == 0, f"control socket is mode {socket_mode:o}"
        assert status(config)["state"] == "standby"

        bodycam("press", "--config", str(config))
        wait_for(lambda: status(config)["state"] == "recording", timeout=10, what="recording")
        time.sleep(1.5)
        now = status(config)
        assert now["current_segment"].startswith("open/")
        assert now["segments_sealed"] >= 1
        # Synced by the deadline ([recorder] flush_interval = 0.5 on the test device).
        assert 0 < now["longest_unsynced_ms"] < 1500, now

        bodycam("press", "--long", "--config", str(config))
        assert status(config)["state"] == "standby"
        bodycam("trigger", "start", "--source", "holster", "--config", str(config))
        wait_for(lambda: status(config)["state"] == "recording", timeout=10, what="recording")
        time.sleep(1.2)
        human = bodycam("status", "--config", str(config)).stdout
        assert "TEST-0001 (OFC-7): recording" in human and "chain head: seq" in human
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    assert daemon.returncode == 0, daemon.tail()

    records = chain_types(store)
    types = [type_ for type_, _ in records]
    assert types[0] == "boot" and types[-1] == "shutdown"
    assert records[-1][1]["reason"] == "SIGTERM"
    stops = [payload for type_, payload in records if type_ == "record_stop"]
    assert [stop["reason"] for stop in stops] == ["button_hold", "SIGTERM"]
    assert [p["trigger"] for t, p in records if t == "record_start"] == ["button",
                                                                         "external:holster"]
    assert not list((store / "open").iterdir()), "SIGTERM must seal the open segment"
    verified = bodycam("verify", str(store))
    assert verified.stdout.startswith("OK: ")


def test_status_without_a_daemon_says_so(write_config) -> None:
    result = bodycam("status", "--config", str(write_config()), check=False)
    assert result.returncode == 3
    assert "no daemon is listening on" in result.stderr


def test_demo_records_several_segments_and_verifies(write_config, tmp_path: Path) -> None:
    config = write_config(realtime="true", segment_seconds=1.0, notice="true",
                          languages='["en"]')
    result = bodycam("demo", "--config", str(config), "--store", str(tmp_path / "demo"),
                     "--seconds", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = dict(line.split(":", 1) for line in result.stdout.splitlines()
                   if line[:1].isalpha() and ":" in line)
    assert int(summary["segments"].split()[0]) >= 3
    assert summary["gaps"].strip() == "0"
    assert summary["verify"].strip().startswith("OK: ")
    assert summary["self-check"].strip().startswith("PASS, 12 items, sealed as record")
    assert summary["notice"].strip().startswith("played en from ")
    assert summary["interrupt"].strip().startswith("officer_stop_restart from recording ")
    assert "explained (ended by max_length), sealed as sealed/" in summary["voice note"]
    assert summary["custody"].strip().startswith("record ")
    evidence = tmp_path / "demo-evidence" / "TEST-0001"
    assert summary["evidence"].strip().startswith(f"{evidence} (OK: ")
    assert bodycam("verify", str(evidence)).returncode == 0
    whole = bodycam("verify", str(evidence.parent))  # the evidence folder of every device
    assert whole.stdout.startswith("OK: ") and str(evidence) not in whole.stdout


def _tgkill(pid: int, tid: int, signum: int) -> bool:
    """A signal to one thread of another process (Linux tgkill(2)); False if it is gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(SYS_TGKILL, pid, tid, signum) == 0


@pytest.mark.skipif(SYS_TGKILL is None, reason="tgkill(2) number unknown on this machine")
def test_sigterm_caught_by_another_thread_still_shuts_down(write_config, tmp_path: Path) -> None:
    """The kernel gives a process's SIGTERM to any thread that does not block it: with the
    simulated camera's encoder starting threads many times a second, sometimes not to the
    main thread. Python runs the handler on the main thread only, once that runs again: the
    event loop must not wait unboundedly for its next event (it did; the daemon never left)."""
    config = write_config(realtime="true")
    store = tmp_path / "store"
    daemon = spawn_daemon(config, store)
    try:
        trigger_start(config)
        wait_for(lambda: any(b["type"] == "segment_sealed"
                             for b in read_bodies(store / "chain.jsonl")), 20, "a segment")
        threads = sorted(int(tid) for tid in os.listdir(f"/proc/{daemon.pid}/task")
                         if int(tid) != daemon.pid)
        assert any(_tgkill(daemon.pid, tid, signal.SIGTERM) for tid in threads)
        assert daemon.wait(10) == 0
    finally:
        daemon.kill()
    bodies = read_bodies(store / "chain.jsonl")
    assert bodies[-1]["type"] == "shutdown" and bodies[-1]["payload"]["reason"] == "SIGTERM"
    assert not list((store / "open").iterdir()), "the open segment is sealed"
