"""The limits on remote commands, applied where their bytes arrive (docs/telemetry.md).

Whoever holds the fleet identity can publish to a device's command topic as fast and as
big as the broker lets them. Without limits every message cost a sealed chain record and a
parse: a flood grew the chain without bound, a huge payload took the memory, and a deeply
nested one ended in an exception nobody heard. Here: a token bucket says how many commands
may be looked at, a byte cap and a nesting cap say which ones may be parsed, and refusals
are counted and sealed together, one record per window, so the chain grows by a bounded
amount whatever arrives.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

MAX_COMMAND_BYTES = 1024        # a command is {"id", "cmd"}: well under 100 bytes
# What the device asks the broker (MQTT 5 CONNECT Maximum Packet Size) never to send it: a
# command at the cap with its topic and headers fits, so a command a little over the cap is
# still answered; anything far over it never reaches the device.
MAX_PACKET_BYTES = 4 * MAX_COMMAND_BYTES
MAX_NESTING = 4                 # a command is a flat object: depth 1
RATE_PER_S = 1.0                # commands looked at per second, sustained
BURST = 10                      # ... and at once, after a quiet spell
MAX_WAITING = BURST             # commands queued or running; more are refused as busy
REFUSAL_WINDOW_S = 60.0         # at most one `remote_commands_refused` record per window
SAMPLES = 5                     # refusals kept whole in that record (the first of its window)

RECORD_TYPE = "remote_commands_refused"


class TokenBucket:
    """`rate` tokens a second up to `burst`; each command takes one or is refused."""

    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        """Called on paho's thread only, so no lock."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def nesting_depth(raw: bytes, limit: int) -> int:
    """How deeply arrays and objects nest in `raw` (JSON), counted without parsing it, so a
    payload built to exhaust the parser's recursion is refused before it is parsed; stops
    counting once past `limit`. Brackets inside strings do not count."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:      # backslash
                escaped = True
            elif byte == 0x22:      # closing quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


class RefusalTally:
    """Refused commands counted by reason between `remote_commands_refused` records.

    The first refusal after a quiet window is due at once (a lone refusal shows in the
    chain straight away, as it did when each one was sealed); later ones are due when the
    window since the last record closes. After `close` nothing more is counted."""

    def __init__(self, window_s: float = REFUSAL_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s, self._clock = window_s, clock
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._samples: list[dict[str, Any]] = []
        self._opened: float | None = None     # when the first refusal not yet sealed came
        self._last_record = -math.inf
        self._closed = False

    def count(self, reason: str, sample: dict[str, Any] | None = None) -> bool:
        """One refusal; `sample` (id, cmd, reason) when it was parsed far enough to have
        one. True when a record is due now: the caller wakes whoever seals it."""
        with self._lock:
            if self._closed:
                return False
            first = not self._counts
            self._counts[reason] += 1
            if first:
                self._opened = self._clock()
            if sample is not None and len(self._samples) < SAMPLES:
                self._samples.append(sample)
            return first and self._clock() - self._last_record >= self._window_s

    def due_in(self) -> float | None:
        """Seconds until a record is due (0: now); None when nothing waits to be sealed."""
        with self._lock:
            if not self._counts:
                return None
            return max(0.0, self._last_record + self._window_s - self._clock())

    def take(self, final: bool = False) -> dict[str, Any] | None:
        """The record's payload when one is due (or, `final`, whenever anything is counted),
        starting a new window; `final` also closes the tally."""
        with self._lock:
            now = self._clock()
            self._closed = self._closed or final
            if not self._counts or (not final and now - self._last_record < self._window_s):
                return None
            assert self._opened is not None
            payload = {"source": "mqtt", "refused": sum(self._counts.values()),
                       "reasons": dict(sorted(self._counts.items())),
                       "seconds": round(now - self._opened),  # the chain has no floats
                       "samples": self._samples}
            self._counts, self._samples, self._opened = Counter(), [], None
            self._last_record = now
            return payload
