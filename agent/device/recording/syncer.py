"""The syncer: every byte a segment writer hands the OS is durable soon after, by a deadline.

A deadline, not a period: a sync starts `flush_interval` after the oldest byte it will
cover was written, whatever the packets do, and on its own thread, so that a slow
fdatasync (an SD card can take hundreds of milliseconds) holds up no packet. What a power
cut can lose is then bounded by the interval plus one fdatasync (docs/recorder.md,
"Durability"); `longest_unsynced_s` is the figure the device measured.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent.device.recording.segment import SegmentWriter

log = logging.getLogger(__name__)


class Syncer:
    def __init__(self, interval: float, on_synced: Callable[[float], None]) -> None:
        """`on_synced(age)`: after each sync, the age the oldest byte it covered had."""
        self._interval = interval
        self._on_synced = on_synced
        self._writers: list[SegmentWriter] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._failing = False
        # CLOCK_MONOTONIC ns at which the sync in progress began, for the watchdog: a disk
        # that hangs shows as a sync that never ends.
        self.syncing_since_ns: int | None = None
        self._thread = threading.Thread(target=self._run, name="segment-syncer", daemon=True)
        self._thread.start()

    def watch(self, writer: SegmentWriter) -> None:
        with self._wake:
            self._writers.append(writer)

    def forget(self, writer: SegmentWriter) -> None:
        """After the writer is closed (its close syncs it all)."""
        with self._wake:
            self._writers.remove(writer)

    def written(self) -> None:
        """A writer has bytes not yet synced where it had none: a new deadline."""
        with self._wake:
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
                now = time.monotonic()
                deadlines = [(since + self._interval, writer) for writer in self._writers
                             if (since := writer.unsynced_since) is not None]
                due = [writer for deadline, writer in deadlines if deadline <= now]
                if not due:
                    self._wake.wait(min((d for d, _ in deadlines), default=now + 3600) - now)
                    continue
            for writer in due:
                self._sync(writer)

    def _sync(self, writer: SegmentWriter) -> None:
        self.syncing_since_ns = time.monotonic_ns()
        try:
            age = writer.sync()
        except OSError:
            # The writer's own writes and its close report the file's trouble to the daemon;
            # here it is logged once a run of failures.
            if not self._failing:
                log.critical("fdatasync of %s failed", writer.path, exc_info=True)
            self._failing = True
            return
        finally:
            self.syncing_since_ns = None
        self._failing = False
        if age is not None:
            self._on_synced(age)
