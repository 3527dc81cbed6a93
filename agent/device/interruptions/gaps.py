"""Interruptions: every gap in an incident's recording, sealed and explained (Art. 16).

A gap opens when a fault stops a recording (or a power cut, a crash or a hung
recorder, found at the next start), or when the officer stops and starts again
within one incident. It is
sealed as one `interruption` record when recording resumes, with both ends and the
recordings on each side, and the officer is asked at once to say why. An
interruption with no spoken explanation stays flagged: the device reminds the
officer until one is given (a press of the function button records it). The
exemption of Art. 7, a spoken reason why no recording is made, goes through the
same listener.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.config import VoiceNoteConfig
from agent.device.interruptions.voice_note import VoiceNoteTaker
from agent.device.voice import Voice
from agent.evidence.chain import Chain, utc_iso

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gap:
    """Where recording stopped: why, when, and what was recorded before it.

    The cause is a fault's (storage_full, camera_fault, battery_critical, overheated: see
    agent/device/faults.py), officer_stop_restart, or one found at the next start:
    power_loss_or_crash, watchdog when the run before had found its recorder hung,
    camera_restart_failed when it had ended itself because the camera could not be
    restarted, or under_voltage or throttled when the firmware said so to its end (see the
    heat and power watch).
    """

    cause: str
    detail: str
    recording_before: int | None
    last_segment: str | None
    start_wall: str | None
    start_mono_ns: int | None
    start_boot_id: str


def gap_now(cause: str, detail: str, recording: dict[str, Any] | None, boot_id: str,
            since_mono_ns: int | None = None) -> Gap:
    """A gap that opens on this boot, at `since_mono_ns` (the last frame) or now."""
    mono = since_mono_ns or time.monotonic_ns()
    payload = recording["payload"] if recording else {}
    return Gap(cause, detail, payload.get("recording"), payload.get("last_segment"),
               wall_at(mono), mono, boot_id)


def wall_at(mono_ns: int) -> str:
    """The wall time of a CLOCK_MONOTONIC moment of this boot, as the chain writes times."""
    return utc_iso(time.time_ns() - (time.monotonic_ns() - mono_ns))


class Interruptions:
    """Seals gaps when recording resumes, and takes the officer's spoken records, one at a
    time, on a worker thread so that neither listening nor sealing holds up the daemon."""

    def __init__(self, config: VoiceNoteConfig, chain: Chain, notes: VoiceNoteTaker,
                 voice: Voice, pulse: Callable[[int], None], listen: bool,
                 unexplained_seqs: Iterable[int] = ()) -> None:
        self._config = config
        self._chain = chain
        self._notes = notes
        self._voice = voice
        self._pulse = pulse
        self._listen = listen
        self.pending: list[Gap] = []
        self.unexplained: set[int] = set(unexplained_seqs)
        self._last_reminder = time.monotonic()
        self._closing = False
        self._idle = threading.Event()
        self._idle.set()
        self._jobs: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name="spoken-records", daemon=True)
        self._worker.start()

    def begin(self, gap: Gap) -> None:
        log.warning("interruption: %s (%s)", gap.cause, gap.detail)
        self.pending.append(gap)

    def resumed(self, recording: int) -> None:
        """Recording runs again: seal each open gap, and ask the officer why."""
        for gap in self.pending:
            self._ask(self._seal(gap, recording))
        self.pending = []

    def ended(self, reason: str) -> None:
        """The incident ended while recording could not resume: the gap is sealed open-ended."""
        for gap in self.pending:
            self._seal(gap, None, reason)
        self.pending = []

    def explain(self) -> None:
        """The officer asks to explain (the function button): the oldest unexplained gap."""
        if self.unexplained:
            self._ask(min(self.unexplained))
        else:
            log.info("function button: no interruption is waiting for an explanation")

    def declare_exemption(self) -> None:
        if self._listen:
            self._jobs.put(("exemption", {}))
        else:
            log.warning("exemption asked for, but audio is disabled: nothing can be recorded")

    def tick(self, now: float) -> None:
        """Remind, by buzz and voice, while an interruption is unexplained: on the worker,
        so a reminder never talks over the officer's note nor piles up behind another."""
        interval = self._config.reminder_interval_s
        if not (self.unexplained and interval and now - self._last_reminder >= interval
                and self._idle.is_set() and self._jobs.empty()):
            return
        self._last_reminder = now
        self._jobs.put(("reminder", {}))

    def close(self) -> None:
        """Stop listening (what was said so far is sealed) and end the worker."""
        self._closing = True
        self._notes.cancel()
        self._jobs.put(None)
        self._worker.join()

    def _seal(self, gap: Gap, resumed: int | None, ended_by: str | None = None) -> int:
        record = self._chain.append("interruption", {
            "cause": gap.cause,
            "detail": gap.detail,
            "recording_before": gap.recording_before,
            "last_segment": gap.last_segment,
            "start": gap.start_wall,
            "start_mono_ns": gap.start_mono_ns,
            "start_boot_id": gap.start_boot_id,
            "end": utc_iso(time.time_ns()),
            "end_mono_ns": time.monotonic_ns(),
            "recording_after": resumed,
            "ended_by": ended_by,
            "explained": False,
        })
        self.unexplained.add(record["seq"])
        return record["seq"]

    def _ask(self, interruption: int) -> None:
        self._last_reminder = time.monotonic()
        if self._listen:
            self._jobs.put(("voice_note", {"interruption": interruption}))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._idle.clear()
            kind, link = job
            try:
                if self._closing:
                    log.warning("shutting down: the %s asked for was not taken", kind)
                elif kind == "reminder":
                    self._remind()
                else:
                    record = self._notes.take(kind, link)
                    if kind == "voice_note":
                        self._noted(link["interruption"], record["payload"]["explained"])
            except Exception:  # a broken microphone must not end the daemon; it is logged
                log.exception("could not take the %s", kind)
            finally:
                self._last_reminder = time.monotonic()
                self._idle.set()

    def _remind(self) -> None:
        if not self.unexplained:
            return
        log.warning("interruptions %s are unexplained", sorted(self.unexplained))
        self._pulse(2)
        self._voice.say("unexplained-reminder")
        self._voice.flush()

    def _noted(self, interruption: int, explained: bool) -> None:
        if explained:
            self.unexplained.discard(interruption)
        else:
            log.warning("interruption %d is unexplained: no speech in the voice note",
                        interruption)
