"""Markers: what a run that has systemd restart it leaves in the store for the next start.

A run that ends itself (a camera only a new process can reopen), withholds the watchdog (a
hung recorder) or may be cut at any moment (the firmware reports under-voltage) writes why,
on disk before it goes; the next start takes it once, so the gap it seals says why instead
of an unexplained `power_loss_or_crash`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.durable import fsync_dir, write_file


def leave(path: Path, marker: dict[str, Any]) -> None:
    write_file(path, json.dumps(marker).encode())


def take(path: Path) -> dict[str, Any] | None:
    """The marker the last run left, once: it is removed. An unreadable one still says that
    the last run left one, with why it cannot be read as its reason."""
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(marker, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        marker = {"reason": f"unreadable marker ({exc})", "since": ""}
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)  # else a power cut could bring it back to explain a later cut
    return marker
