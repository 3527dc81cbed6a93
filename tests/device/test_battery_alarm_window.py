"""[battery] low_minutes stays in the standard's window: the low-battery alarm comes while at
least 5 and at most 30 minutes of recording remain."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.config import load_config


@pytest.mark.parametrize("minutes", ["4.5", "31", "0"])
def test_a_threshold_outside_5_to_30_minutes_is_refused_exit_2(write_config,
                                                               minutes: str) -> None:
    path = write_config(extra=f"[battery]\nlow_minutes = {minutes}\n")
    message = (f"bodycam: config error in {path}: [battery] low_minutes = {minutes}: "
               "the low-battery alarm must come while 5 to 30 minutes of recording remain")
    result = subprocess.run([sys.executable, "-m", "agent", "selfcheck", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr.strip().splitlines()) == (2, [message])


@pytest.mark.parametrize("minutes", ["5", "30"])
def test_the_window_s_ends_are_accepted(write_config, minutes: str) -> None:
    config, _ = load_config(write_config(extra=f"[battery]\nlow_minutes = {minutes}\n"))
    assert config.battery.low_minutes == float(minutes)
