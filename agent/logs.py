"""Log lines for a terminal, or for the journal when systemd reads our stderr.

Under systemd, stderr goes to journald, which stamps each line itself and reads a
leading `<N>` as its syslog priority (sd-daemon(3)): with it, `journalctl -p err`
finds the errors; without it, every line is logged at the unit's default priority.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import TextIO

TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def syslog_priority(level: int) -> int:
    """The syslog priority of a logging level: CRITICAL 2, ERROR 3, WARNING 4, INFO 6,
    DEBUG 7; a level between two standard ones takes the lower one's."""
    for floor, priority in ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                            (logging.INFO, 6)):
        if level >= floor:
            return priority
    return 7


class JournalFormatter(logging.Formatter):
    """`<N>name: message`, no timestamp (journald adds its own). Every line of a record
    (a traceback) carries the prefix, since journald makes each line an entry of its own."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def to_journal(stream: TextIO) -> bool:
    """Whether `stream` is the journal stream systemd gave us: JOURNAL_STREAM is
    `device:inode` of it (systemd.exec(5)), and a child whose stderr was redirected
    inherits the variable but not the stream."""
    try:
        device, inode = (int(n) for n in os.environ["JOURNAL_STREAM"].split(":"))
        status = os.fstat(stream.fileno())
    except (KeyError, ValueError, OSError, AttributeError):
        return False
    return (status.st_dev, status.st_ino) == (device, inode)


def configure(verbose: bool) -> None:
    """Log to stderr: for the journal if that is where it goes, else with a timestamp."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter() if to_journal(sys.stderr)
                         else logging.Formatter(TERMINAL_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def error_line(message: str) -> str:
    """A message printed to stderr outside logging, marked as an error for the journal."""
    return f"<3>{message}" if to_journal(sys.stderr) else message


class Throttled:
    """Warnings logged at most once per `every_s`, each saying how many were left out
    before it: what a peer can make happen again and again (a refused request, a bogus
    announcement) must not fill the log."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0,
                 what: str = "refusals") -> None:
        self._log, self._every_s, self._what = logger, every_s, what
        self._lock = threading.Lock()
        self._next = 0.0
        self._skipped = 0

    def warning(self, message: str) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                self._skipped += 1
                return
            skipped, self._skipped, self._next = self._skipped, 0, now + self._every_s
        self._log.warning("%s%s", message, f" ({skipped} more {self._what} not logged in the "
                          f"last {self._every_s:.0f} s)" if skipped else "")
