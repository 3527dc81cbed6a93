"""Where one pull stands, for whoever watches it (the dock service, its MQTT status).

The pull sets the stage and counts the files as they settle; the bytes in hand are read
off the transfers only when a snapshot is taken, so the transfer threads do no work for
it and nothing is written anywhere per chunk. Used on the pull's event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# A pull's stages, in order: the device's identity and chain read, the files not held
# fetched, the copy verified, written to the archive (when one is configured), custody
# reported to the device.
STAGES = ("listing", "fetching", "verifying", "archiving", "custody")


class Progress:
    """One pull's figures: the files (and bytes) to fetch, those the chain lists and the
    folder does not hold, and how many of them are held so far."""

    def __init__(self) -> None:
        self.stage = STAGES[0]
        self.files_total = 0
        self.bytes_total = 0
        self.files_done = 0
        self._held: Callable[[], int] = lambda: 0

    def enter(self, stage: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"no stage {stage!r}")
        self.stage = stage

    def listed(self, sizes: list[int], held: Callable[[], int]) -> None:
        """The files to fetch, by size, and how to read the bytes of them in hand (a part
        kept from a cut counts from where it resumes); the pull starts fetching them."""
        self.files_total, self.bytes_total, self._held = len(sizes), sum(sizes), held
        self.enter("fetching")

    def fetched(self) -> None:
        self.files_done += 1

    def dropped(self, size: int) -> None:
        """A listed file not to be fetched after all (purged on the device meanwhile)."""
        self.files_total -= 1
        self.bytes_total -= size

    def snapshot(self) -> dict[str, Any]:
        """The figures now, with what is still to fetch ("pending")."""
        done = max(0, min(self._held(), self.bytes_total))
        return {"stage": self.stage, "files_total": self.files_total,
                "bytes_total": self.bytes_total, "files_fetched": self.files_done,
                "bytes_fetched": done, "pending_files": self.files_total - self.files_done,
                "pending_bytes": self.bytes_total - done}
