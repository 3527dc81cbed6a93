"""Log lines journald understands under systemd, and today's lines everywhere else."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.logs import JournalFormatter, to_journal

ROOT = Path(__file__).resolve().parents[2]
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d")
THERMAL_MISSING = '[thermal]\nbackend = "sysfs"\nzone = "/nonexistent/thermal_zone"\n'


def record(level: int, message: str, exc_info: bool = False) -> logging.LogRecord:
    info = None
    if exc_info:
        try:
            raise OSError("the disk is gone")
        except OSError:
            info = sys.exc_info()
    return logging.LogRecord("agent.device.daemon", level, __file__, 1, message, None, info)


@pytest.mark.parametrize(("level", "priority"), [
    (logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6),
    (logging.DEBUG, 7), (logging.INFO + 5, 6), (5, 7)])
def test_journal_lines_carry_the_priority_and_no_timestamp(level: int, priority: int) -> None:
    line = JournalFormatter().format(record(level, "offload server not started: busy"))
    assert line == f"<{priority}>agent.device.daemon: offload server not started: busy"


def test_every_line_of_a_traceback_keeps_the_priority() -> None:
    lines = JournalFormatter().format(record(logging.ERROR, "could not seal", True)).split("\n")
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>OSError: the disk is gone"


def test_the_journal_is_the_stream_journal_stream_names(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "stderr", "w") as named, open(tmp_path / "other", "w") as other:
        status = os.fstat(named.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
        assert to_journal(named)
        assert not to_journal(other)  # inherited by a child whose stderr was redirected
        assert not to_journal(io.StringIO())
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not to_journal(named)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not to_journal(named)


def run_logging(tmp_path: Path, journal: str | None, *args: str) -> tuple[int, list[str]]:
    """`python -m agent ARGS` with stderr in a file, JOURNAL_STREAM naming that file
    (`journal="match"`), another one, or unset; its stderr lines."""
    stderr_path = tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with open(stderr_path, "w") as stderr:
        status = os.fstat(stderr.fileno())
        if journal == "match":
            env["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"
        elif journal == "other":
            env["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino + 1}"
        result = subprocess.run([sys.executable, "-m", "agent", *args], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr, timeout=60)
    return result.returncode, stderr_path.read_text().splitlines()


def test_under_systemd_the_daemon_logs_for_journald(write_config, tmp_path: Path) -> None:
    """A self-check with no daemon running opens the device itself: the missing thermal
    sensor is logged CRITICAL, the start and the shutdown INFO."""
    config = write_config(extra=THERMAL_MISSING)
    code, lines = run_logging(tmp_path, "match", "selfcheck", "--config", str(config))
    assert code == 0, lines
    assert "<2>hal.absent: thermal absent, recording without it: ThermalError: cannot " \
           "read /nonexistent/thermal_zone/temp" in "\n".join(lines)
    assert any(line.startswith("<6>agent.device.daemon: device TEST-0001 ready")
               for line in lines)
    assert all(re.match(r"<[0-7]>", line) for line in lines), lines
    assert not any(TIMESTAMP.search(line) for line in lines), lines


def test_a_configuration_error_is_an_error_in_the_journal(tmp_path: Path) -> None:
    code, lines = run_logging(tmp_path, "match", "selfcheck", "--config",
                              str(tmp_path / "missing.toml"))
    assert code == 2 and lines and lines[0].startswith("<3>bodycam: "), lines


@pytest.mark.parametrize("journal", [None, "other"])
def test_elsewhere_the_lines_keep_their_timestamp(write_config, tmp_path: Path,
                                                  journal: str | None) -> None:
    config = write_config(extra=THERMAL_MISSING)
    code, lines = run_logging(tmp_path, journal, "selfcheck", "--config", str(config))
    assert code == 0, lines
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} CRITICAL hal.absent: thermal absent",
                    lines[0]), lines
    assert not any(line.startswith("<") for line in lines), lines


def test_the_unit_keeps_journald_reading_the_prefix() -> None:
    unit = (ROOT / "systemd" / "bodycam.service").read_text()
    assert not re.search(r"^\s*SyslogLevelPrefix\s*=\s*(no|false|0|off)", unit, re.M | re.I)
    assert not re.search(r"^\s*StandardError\s*=\s*(?!journal)", unit, re.M)
