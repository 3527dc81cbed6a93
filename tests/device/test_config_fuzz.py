"""A damaged configuration is refused at once (exit 2, the file and the place named, no
traceback), and before anything is sealed: under systemd a config error must not become a
boot record every two seconds (the unit does not restart on exit 2).

The corpus is mutations of a real device configuration, from a fixed seed: every number set
to inf, nan, huge or of the wrong type; control characters in every string; invalid UTF-8,
NUL bytes and deep nesting; cuts and bit flips (which may leave a valid file: then the
command simply runs).
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.device import write_device_config
from tests.support.fuzz import run_cli

EXTRA = """
[battery]
capacity_wh = 11.1
low_minutes = 20
i2c_bus = 1

[thermal]
warn_celsius = 75

[clock]
max_error_ms = 16000

[dock]
port = 8443
purge_free_below_mb = 2048
purge_check_s = 60

[gnss]
sim_alt_m = 34.0

[mqtt]
outbox_limit = 100000
heartbeat_s = 60
"""
BAD_NUMBERS = ["inf", "-inf", "nan", "+inf", "1e309", str(10**30), str(-(10**30)),
               "9" * 5000, '"1"']
_NUMBER = re.compile(rb"^(\w+ = )(-?[0-9][0-9_.]*)(.*)$", re.M)
_STRING = re.compile(rb'^(\w+ = ")([^"\n]*)(".*)$', re.M)


def corpus(good: bytes) -> Iterator[tuple[str, bytes, bool]]:
    """(name, the file, whether it is certainly invalid), the same on every run."""
    rng = random.Random(18)
    for match in _NUMBER.finditer(good):
        for bad in BAD_NUMBERS:
            yield (f"{match[1].decode()}{bad[:12]}",
                   good[:match.start(2)] + bad.encode() + good[match.end(2):], True)
    for match in _STRING.finditer(good):
        for name, text in (("NUL", b"\x00"), ("\\u0000", b"\\u0000"), ("a newline", b"\\n"),
                           ("escape", b"\\u001b[31m"), ("invalid UTF-8", b"\xff")):
            yield (f"{match[1].decode()}{name}",
                   good[:match.end(2)] + text + good[match.end(2):], True)
    for at in rng.sample(range(len(good)), 25):
        yield f"invalid UTF-8 at byte {at}", good[:at] + b"\xc3\x28" + good[at:], True
        yield f"NUL at byte {at}", good[:at] + b"\x00" + good[at:], True
    for depth in (100, 1000, 100_000):
        yield f"an array {depth} deep", good + b"\nx = " + b"[" * depth + b"]" * depth, True
        yield (f"an inline table {depth} deep",
               good + b"\ny = " + b"{a = " * depth + b"1" + b"}" * depth, True)
    yield "a table header 100000 deep", good + b"\n[" + b"a." * 100_000 + b"b]\n", True
    yield "twice the limit in size", good + b"\n#" + b"x" * (2 << 20), True
    for cut in sorted(rng.sample(range(len(good)), 30)):
        yield f"cut at byte {cut}", good[:cut], False
    for at in rng.sample(range(len(good)), 40):
        flipped = bytearray(good)
        flipped[at] ^= 1 << rng.randrange(8)
        yield f"bit flip at byte {at}", bytes(flipped), False


@pytest.fixture
def device(recorded_store: Path, tmp_path: Path) -> tuple[Path, bytes]:
    """A configuration for a copy of a recorded store: valid, `bodycam verify` says OK."""
    store = tmp_path / "store"
    shutil.copytree(recorded_store, store, ignore=shutil.ignore_patterns("control.sock"))
    config = write_device_config(tmp_path / "device.toml", store, extra=EXTRA)
    return config, config.read_bytes()


def test_damaged_configurations_are_refused_in_one_line(device: tuple[Path, bytes]) -> None:
    config, good = device
    assert run_cli(["verify", "--config", str(config)]).code == 0
    failures, cases = [], 0
    for name, data, invalid in corpus(good):
        config.write_bytes(data)
        ended = run_cli(["verify", "--config", str(config)], seconds=20)
        cases += 1
        problem = ended.problem({2} if invalid else {0, 1, 2})
        named = all(line.startswith((f"bodycam: config error in {config}:",
                                     f"config error in {config}:"))
                    for line in ended.stderr.splitlines())
        if problem and "lines on stderr" in problem and ended.code == 2 and named:
            problem = None  # several problems (a cut leaves keys missing): a line each
        if problem is None and ended.code == 2 and not named:
            problem = f"the file is not named: {ended.stderr[:160]!r}"
        if problem:
            failures.append(f"{name}: {problem}")
    assert cases >= 300
    assert not failures, f"{len(failures)} of {cases} cases:\n" + "\n".join(failures)


def test_a_config_error_names_the_line(device: tuple[Path, bytes]) -> None:
    config, good = device
    at = good.index(b"[gpio]")
    config.write_bytes(good[:at] + b"# \xff\n" + good[at:])
    ended = run_cli(["verify", "--config", str(config)])
    line = good[:at].count(b"\n") + 1
    assert ended.code == 2
    assert ended.stderr == f"bodycam: config error in {config}: not UTF-8 at line {line}, " \
                           "column 3 (byte 0xff)\n"


@pytest.mark.parametrize("change", [
    (b"segment_seconds = 1.0", b"segment_seconds = inf"),
    (b"reserve_bytes = 1048576", b"reserve_bytes = 100000000000000000000"),
    (b"same_incident_s = 600", b"same_incident_s = inf"),
    (b"storage_low_minutes = 60", b"storage_low_minutes = 1e308"),
    (b'officer = "OFC-7"', b'officer = "OFC\\u00007"'),
    (b"[gpio]", b"[gpio]\n# caf\xe9"),
    (b"[gpio]", b"x = " + b"[" * 10_000 + b"]" * 10_000 + b"\n[gpio]"),
], ids=["inf", "huge integer", "inf seconds", "1e308 minutes", "NUL", "latin-1", "deep nesting"])
def test_a_bad_config_seals_nothing_and_is_not_restarted(
        tmp_path: Path, change: tuple[bytes, bytes]) -> None:
    """`bodycam run`: exit 2 (systemd's RestartPreventExitStatus), and no boot record."""
    store = tmp_path / "store"
    config = write_device_config(tmp_path / "device.toml", store)
    good = config.read_bytes()
    assert change[0] in good
    config.write_bytes(good.replace(change[0], change[1], 1))
    try:
        result = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon started on a bad configuration")
    assert not (store / "chain.jsonl").exists(), "a record was sealed"
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"bodycam: config error in {config}: "), result.stderr
