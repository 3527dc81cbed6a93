"""Purge: free the device of footage a dock holds, and of nothing else (Art. 21).

Only sealed files under custody are candidates, oldest first, and only those the custody
record itself holds, as the signed chain says (not the index alone); a file of a recording
marked important only once a custody holds it under the `marked` retention. The `purge` record
is sealed before any file is deleted: a power cut between the two leaves a file
the chain says may go (harmless, the next purge skips it as gone or deletes it),
never a file missing without a record (which the verifier rightly calls deletion).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from agent.config import DockConfig
from agent.device.offload.custody import Ledger, SealedFile
from agent.durable import fsync_dir
from agent.evidence.chain import Chain
from agent.evidence.store import Store
from hal.storage import free_bytes

log = logging.getLogger(__name__)


class Purger:
    """Runs the purge policy now (`run`) and every `purge_check_s` on its own thread."""

    def __init__(self, store: Store, chain: Chain, ledger: Ledger, config: DockConfig) -> None:
        self._store = store
        self._chain = chain
        self._ledger = ledger
        self._config = config
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="purge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._config.purge_check_s):
            try:
                self.run()
            except OSError:  # a full or failing disk must not end the purge thread
                log.exception("purge")

    def run(self) -> dict[str, Any] | None:
        """Purge what the policy asks for; returns the sealed purge record, if any."""
        with self._lock:
            candidates = self._ledger.refresh().purgeable()
            free = free_bytes(self._store.root)
            if self._config.purge_policy == "after_custody":
                chosen, reason = candidates, "policy"
            else:
                chosen = _enough(candidates, self._config.purge_free_below_mb * 1_000_000 - free)
                reason = "space"
            chosen = [f for f in chosen if (self._store.root / f.file).exists()]
            confirmed = self._ledger.custody_confirmed(chosen)
            if len(confirmed) < len(chosen):
                log.error("%d file(s) the chain index calls in custody are not held by the "
                          "custody record it names, in the chain itself: not purged",
                          len(chosen) - len(confirmed))
            return self._purge(confirmed, reason, free) if confirmed else None

    def _purge(self, files: list[SealedFile], reason: str, free: int) -> dict[str, Any]:
        record = self._chain.append("purge", {
            "reason": reason,
            "free_bytes": free,
            "files": [{**f.as_record(), "custody": f.custody, "retention": f.retention}
                      for f in files],
        })
        for sealed in files:
            (self._store.root / sealed.file).unlink(missing_ok=True)
        fsync_dir(self._store.sealed)
        log.info("purged %d sealed file(s) under custody (%s), record %d", len(files), reason,
                 record["seq"])
        return record


def _enough(candidates: list[SealedFile], needed: int) -> list[SealedFile]:
    """The oldest candidates whose sizes add up to at least `needed` bytes."""
    chosen: list[SealedFile] = []
    for sealed in candidates:
        if needed <= 0:
            break
        chosen.append(sealed)
        needed -= sealed.size
    return chosen
