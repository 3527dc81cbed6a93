"""The limits on remote commands (agent/device/telemetry/intake.py), on a clock of our own;
tests/system/test_telemetry.py floods a running device through a real Mosquitto."""

from __future__ import annotations

import json
from pathlib import Path

from agent.device.telemetry import intake
from agent.device.telemetry.intake import RefusalTally, TokenBucket, nesting_depth
from agent.evidence.chain import Chain, read_records
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.store import Store
from hal.clock import SimulatedClock


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_lets_a_burst_through_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1.0, burst=10, clock=clock)
    assert sum(bucket.take() for _ in range(1000)) == 10
    clock.now += 2.5
    assert sum(bucket.take() for _ in range(1000)) == 2
    clock.now += 3600
    assert sum(bucket.take() for _ in range(1000)) == 10, "a quiet hour saves no more"


def test_nesting_is_counted_without_parsing_and_strings_do_not_count() -> None:
    assert nesting_depth(b'{"id": "[[[{{{", "cmd": "locate"}', 4) == 1
    assert nesting_depth(b'{"id": "a\\"[[[[[", "cmd": "x"}', 4) == 1, "an escaped quote"
    assert nesting_depth(b'{"a": [1, {"b": []}]}', 4) == 4
    assert nesting_depth(b"[" * 100_000, 4) == 5, "counting stops past the limit"


def test_refusals_are_due_at_once_after_a_quiet_window_then_once_a_window() -> None:
    clock = Clock()
    tally = RefusalTally(window_s=60, clock=clock)
    assert tally.due_in() is None
    assert tally.count("not_allowed", {"id": "c1", "cmd": "stop", "reason": "not_allowed"})
    first = tally.take()
    assert first is not None and first["refused"] == 1 and first["samples"][0]["id"] == "c1"
    assert not any(tally.count("rate_limited") for _ in range(10_000))
    clock.now += 30
    assert tally.take() is None and tally.due_in() == 30
    clock.now += 30
    second = tally.take()
    assert second == {"source": "mqtt", "refused": 10_000, "reasons": {"rate_limited": 10_000},
                      "seconds": 60, "samples": []}
    assert type(second["seconds"]) is int, "the chain holds integers only"
    tally.count("too_deep")
    last = tally.take(final=True)
    assert last is not None and last["reasons"] == {"too_deep": 1}, "sealed at shutdown"
    assert not tally.count("too_deep") and tally.take(final=True) is None


def test_the_largest_aggregate_record_is_within_the_documented_bound(tmp_path: Path) -> None:
    """docs/telemetry.md gives the chain's growth from refusals as one record a window, each
    under 5 KB: here the worst a sender can make one (every reason, samples with the longest
    id and cmd the device keeps, in characters JSON escapes six bytes each)."""
    store = Store(tmp_path / "store").prepare()
    chain = Chain(store.chain, load_or_create_device_key(store.keys),
                  lambda: ("BWC-0001", "OFC-7"), SimulatedClock().state, "boot")
    tally = RefusalTally(window_s=60, clock=Clock())
    worst = "\x01" * 64
    for reason in ("rate_limited", "busy", "too_large", "too_deep", "not_a_command"):
        tally.count(reason)
    for _ in range(100):
        tally.count("not_allowed", {"id": worst, "cmd": worst, "reason": "not_allowed"})
    payload = tally.take(final=True)
    assert payload is not None and len(payload["samples"]) == intake.SAMPLES
    chain.append(intake.RECORD_TYPE, payload)
    chain.close()
    _, line = read_records(store.chain)[-1]
    assert json.loads(line)["type"] == intake.RECORD_TYPE
    assert len(line) + 1 < 5 * 1024, len(line)
