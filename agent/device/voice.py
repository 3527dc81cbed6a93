"""What the device says aloud: the notice of Art. 13 and the short spoken cues.

Speech runs on its own thread, so neither the button nor the recorder ever waits
for a sentence to end. The notice's playback is sealed into the chain with the
words said, the file they came from and when they were heard.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.evidence.chain import Chain, utc_iso
from hal.audio import Speaker, load_wav

log = logging.getLogger(__name__)


def wall_ns_at(monotonic_ns: int) -> int:
    """The wall-clock time of a moment measured on CLOCK_MONOTONIC a little earlier."""
    return time.time_ns() - (time.monotonic_ns() - monotonic_ns)


class Voice:
    def __init__(self, speaker: Speaker, folder: Path, languages: list[str], chain: Chain,
                 notice_text: dict[str, str]) -> None:
        self._speaker = speaker
        self._folder = folder
        self._languages = languages
        self._chain = chain
        self._notice_text = notice_text
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="voice", daemon=True)
        self._thread.start()

    def say(self, *phrases: str) -> None:
        """Queue phrases (`selfcheck-fail`, `item-clock`, ...), all of them per language."""
        self._queue.put(lambda: [self._play(f"{phrase}-{lang}.wav")
                                 for lang in self._languages for phrase in phrases])

    def notice(self, recording: int, done: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Queue the notice; its record is sealed when it has been played."""
        self._queue.put(lambda: self._play_notice(recording, done))

    def flush(self) -> None:
        """Wait until everything queued so far has been said."""
        said = threading.Event()
        self._queue.put(said.set)
        said.wait()

    def close(self) -> None:
        """Finish what is being said, drop what is still queued."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                job()
            except Exception:  # a missing file or a dead speaker must not silence the rest
                log.exception("could not speak")

    def _play(self, name: str) -> tuple[Path, Any]:
        path = self._folder / name
        pcm, rate = load_wav(path)
        return path, self._speaker.play(pcm, rate)

    def _play_notice(self, recording: int, done: Callable[[dict[str, Any]], None] | None) -> None:
        parts = []
        for language in self._languages:
            path, playback = self._play(f"notice-{language}.wav")
            parts.append({
                "language": language,
                "text": self._notice_text.get(language, ""),
                "file": path.name,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "started": utc_iso(wall_ns_at(playback.started_ns)),
                "ended": utc_iso(wall_ns_at(playback.ended_ns)),
                "started_mono_ns": playback.started_ns,
                "ended_mono_ns": playback.ended_ns,
            })
        record = self._chain.append("notice_played", {"recording": recording, "parts": parts})
        if done:
            done(record)
