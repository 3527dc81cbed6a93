"""Where one pull stands, for whoever watches it (the dock service, its MQTT status).

The pull writes it as it goes (its transfer threads add the bytes they receive); the
watcher reads a snapshot at its own pace, so nothing is written anywhere per chunk.
"""

from __future__ import annotations

import threading
from typing import Any

# A pull's stages, in order: the device's identity and chain read, the files not held
# fetched, the copy verified, written to the archive (when one is configured), custody
# reported to the device.
STAGES = ("listing", "fetching", "verifying", "archiving", "custody")


class Progress:
    """One pull's figures: the files (and bytes) to fetch, those the chain lists and the
    folder does not hold, and how many of them are held so far."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the transfer threads add bytes at once
        self.stage = STAGES[0]
        self.files_total = 0
        self.bytes_total = 0
        self.files_done = 0
        self.bytes_done = 0

    def enter(self, stage: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"no stage {stage!r}")
        self.stage = stage

    def listed(self, sizes: list[int]) -> None:
        """The files to fetch, by size; the pull starts fetching them."""
        with self._lock:
            self.files_total, self.bytes_total = len(sizes), sum(sizes)
        self.enter("fetching")

    def arrived(self, size: int) -> None:
        """Bytes of a file now in its part file; negative when a transfer starts again from
        an earlier point (a retry resumes at a block boundary, a device may ignore Range)."""
        with self._lock:
            self.bytes_done += size

    def fetched(self) -> None:
        with self._lock:
            self.files_done += 1

    def dropped(self, size: int, arrived: int) -> None:
        """A listed file not to be fetched after all (purged on the device meanwhile)."""
        with self._lock:
            self.files_total -= 1
            self.bytes_total -= size
            self.bytes_done -= arrived

    def snapshot(self) -> dict[str, Any]:
        """The figures now, with what is still to fetch ("pending")."""
        with self._lock:
            done = max(0, min(self.bytes_done, self.bytes_total))
            return {"stage": self.stage, "files_total": self.files_total,
                    "bytes_total": self.bytes_total, "files_fetched": self.files_done,
                    "bytes_fetched": done,
                    "pending_files": self.files_total - self.files_done,
                    "pending_bytes": self.bytes_total - done}
