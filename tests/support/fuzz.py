"""Run `bodycam` in-process on hostile input and judge how it ended.

Hostile input must end in an exit code and one line on stderr that says what is wrong,
never a traceback and never a hang: that is what the fuzz tests check, case by case.
"""

from __future__ import annotations

import io
import signal
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from types import FrameType

from agent.cli import main


@dataclass(frozen=True)
class Ended:
    code: int
    stdout: str
    stderr: str

    def problem(self, codes: set[int]) -> str | None:
        """Why this ending is wrong for bad input (exit in `codes`, one line on stderr)."""
        if "Traceback" in self.stderr:
            return "traceback: " + self.stderr.strip().splitlines()[-1][:160]
        if self.code not in codes:
            return f"exit {self.code} (expected {sorted(codes)}): {self.stderr.strip()[:160]}"
        if len(self.stderr.strip().splitlines()) > 1:
            return f"{len(self.stderr.splitlines())} lines on stderr: {self.stderr[:160]!r}"
        return None


@contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """TimeoutError in the main thread when `what` takes longer than `seconds`."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"{what}: no answer within {seconds} s (a hang)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(argv: list[str], seconds: float = 10.0) -> Ended:
    """`bodycam ARGV` in this process: an exception escaping `main` is what the user would
    have seen as a traceback (exit 1), and is recorded as one."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            with deadline(seconds, f"bodycam {' '.join(argv)}"):
                code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except TimeoutError:
            raise
        except Exception:  # what Python would have printed as a traceback
            err.write(traceback.format_exc())
            code = 1
    return Ended(code, out.getvalue(), err.getvalue())
