"""Spoken records: the officer's voice, asked for, listened to and sealed.

Two kinds: the voice note that explains an interruption (Art. 16), and the
exemption that says why no recording is made (Art. 7). The device asks (the
shipped prompt), then records from the microphone until the officer stops speaking
(simple energy detection), presses a button, or the maximum length is reached. The
recording is its own sealed artifact, a 16-bit PCM WAV named by its record's seq;
a voice note links to its interruption, and the microphone track of the resumed
recording hears it too. A record with no speech says so (`explained: false`), and
an interruption with no explained note stays flagged.
"""

from __future__ import annotations

import io
import queue
import threading
import time
import wave
from collections.abc import Callable
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from agent.config import VoiceNoteConfig
from agent.device.seal_file import seal_file
from agent.device.voice import Voice
from agent.evidence.chain import Chain
from agent.evidence.store import Store
from hal.audio import Microphone, rms_dbfs

_PROMPTS = {"voice_note": "voice-note-prompt", "exemption": "exemption-prompt"}


class VoiceNoteTaker:
    def __init__(self, config: VoiceNoteConfig, store: Store, chain: Chain, voice: Voice,
                 open_microphone: Callable[[], Microphone],
                 button_pressed: Callable[[], bool],
                 recipients: list[X25519PublicKey] | None = None) -> None:
        self._config = config
        self._recipients = recipients or []
        self._store = store
        self._chain = chain
        self._voice = voice
        self._open_microphone = open_microphone
        self._button_pressed = button_pressed
        self.listening = threading.Event()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """End a note being taken now (shutdown); what was said so far is still sealed."""
        self._cancelled.set()

    def take(self, kind: str, link: dict[str, Any]) -> dict[str, Any]:
        """Prompt, listen, seal as a `kind` record (voice_note, exemption) carrying `link`."""
        self._voice.say(_PROMPTS[kind])
        self._voice.flush()
        microphone = self._open_microphone()
        pcm, ended_by, speech = self._listen(microphone)
        return self._seal(kind, link, pcm, microphone.sample_rate, ended_by, speech)

    def _listen(self, microphone: Microphone) -> tuple[np.ndarray, str, bool]:
        blocks: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()
        microphone.start(lambda pcm, _ns: blocks.put(pcm.mean(axis=1).copy()))
        kept: list[np.ndarray] = []
        started = time.monotonic()
        last_speech: float | None = None
        ended_by = "max_length"
        # The hold that asked for an exemption is not the press that ends it.
        armed = not self._button_pressed()
        try:
            while time.monotonic() - started < self._config.max_s:
                if self._cancelled.is_set():
                    ended_by = "shutdown"
                    break
                pressed = self._button_pressed()
                if armed and pressed:
                    ended_by = "button"
                    break
                armed = armed or not pressed
                try:
                    block = blocks.get(timeout=0.1)
                except queue.Empty:
                    continue
                # Listening from the first block in: a sound stream delivers only some time
                # after it is opened, and what is said before then is not heard.
                self.listening.set()
                kept.append(block)
                now = time.monotonic()
                if rms_dbfs(block) > self._config.speech_dbfs:
                    last_speech = now
                if last_speech is None and now - started >= self._config.wait_s:
                    ended_by = "no_speech"
                    break
                if last_speech is not None and now - last_speech >= self._config.silence_s:
                    ended_by = "silence"
                    break
        finally:
            microphone.stop()
            self.listening.clear()
        pcm = np.concatenate(kept) if kept else np.zeros(0, dtype=np.float32)
        return pcm, ended_by, last_speech is not None

    def _seal(self, kind: str, link: dict[str, Any], pcm: np.ndarray, rate: int,
              ended_by: str, speech: bool) -> dict[str, Any]:
        wav = io.BytesIO()
        with wave.open(wav, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
        return seal_file(self._store, self._chain, kind, ".wav", wav.getvalue(),
                         self._recipients, {
                             **link,
                             "duration_ms": len(pcm) * 1000 // rate,
                             "sample_rate": rate,
                             "ended_by": ended_by,
                             "explained": speech,
                         })
