"""The dock's bays as a supervisor sees them, live: each bay's state with its pull's progress.

The durable state (dock-state.json, agent/dock/serve.py) changes when a bay does and after
each pull; a pull's progress changes with every chunk and lives in memory. The board
publishes the two together at most once every `PUBLISH_S`, and only when something
changed: the progress to `dock-progress.json` beside the state (what `bodycam dock status`
shows of a pull under way), and the whole view to each listener (the MQTT status).
The progress file is a view, replaced whole, not synced: a cut loses a second of figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.dock.progress import Progress

log = logging.getLogger(__name__)
PUBLISH_S = 1.0  # at most one publication a second: a bay's progress, not each chunk

# Told the whole view when something in it changed; called on the event loop, so it must
# only hand the view over (agent/dock/status_mqtt.py publishes from a thread of its own).
Listener = Callable[[dict[str, dict[str, Any]]], None]


def progress_path(state: Path) -> Path:
    return state.with_name("dock-progress.json")


class Board:
    """The bays' live view and its publication (see the module)."""

    def __init__(self, bays: dict[str, dict[str, Any]], state: Path) -> None:
        self._bays = bays  # the durable state's, by reference: always the current one
        self._path = progress_path(state)
        self._progress: dict[str, Progress] = {}
        self._published: dict[str, dict[str, Any]] = {}
        self.listeners: list[Listener] = []

    def pulling(self, bay: str, progress: Progress) -> None:
        self._progress[bay] = progress

    def clear(self, bay: str) -> None:
        """The bay is empty: its last pull's figures go."""
        self._progress.pop(bay, None)

    def view(self) -> dict[str, dict[str, Any]]:
        """Each bay's state, with `progress` while a pull runs and after it, until the bay
        is found empty."""
        return {bay: {**seen, **({"progress": self._progress[bay].snapshot()}
                                 if bay in self._progress else {})}
                for bay, seen in self._bays.items()}

    def publish(self) -> None:
        view = self.view()
        changed = {bay: seen for bay, seen in view.items() if self._published.get(bay) != seen}
        if not changed:
            return
        self._published = view
        try:
            self._write({bay: seen["progress"] for bay, seen in view.items()
                         if "progress" in seen})
        except OSError as exc:  # a view: the pulls go on, and the next publication retries
            log.warning("%s not written: %s", self._path, exc)
            self._published = {}
        for listener in self.listeners:
            listener(view)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish what changed, every PUBLISH_S, until `stop`; once more at the end."""
        while not stop.is_set():
            self.publish()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PUBLISH_S)
        self.publish()

    def _write(self, progress: dict[str, dict[str, Any]]) -> None:
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(json.dumps({"at": datetime.now(UTC).isoformat(timespec="seconds"),
                                   "bays": progress}, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self._path)


def read_progress(state: Path) -> dict[str, Any]:
    """The last progress the service published ({"at", "bays"}), or nothing."""
    try:
        data = json.loads(progress_path(state).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
