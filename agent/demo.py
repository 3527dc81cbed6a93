"""`bodycam demo`: the whole daemon on the simulated device, driven as an officer would drive it,
then docked: a dock pulls, verifies and takes custody of what it recorded."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import Config, ConfigError, load_config, voice_folder
from agent.device.daemon import Daemon
from agent.device.state import PhotoPressed, Shutdown
from agent.dock.pull import DockLink, pull
from agent.evidence.chain import read_bodies
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.store import Store
from agent.evidence.verify import verify_store
from agent.pki import write_dock_pki

# The officer's explanation: the simulated microphone's tone, as long as [voice_note] max_s
# allows in the demo, so the note ends by itself and no press is needed (a press in standby
# would start a recording).
_NOTE_SECONDS = 2.0
# Measured on the simulated device: start-up and self-check, and stop, dock pull and verify.
_START_S = 2.5
_DOCK_S = 1.5


@dataclass(frozen=True)
class Plan:
    """Where the demo's time goes, worked out before it starts."""

    seconds: float  # of recording, both recordings together, each ended by a stop hold
    hold: float
    selfcheck_said: float  # the self-check's spoken result, said as the first press comes
    notice: float  # one spoken notice, every language; 0 when not played
    prompt: float  # the voice-note prompt, every language
    note: float  # the officer's voice note; 0 without audio

    @property
    def speech_after(self) -> float:
        """From the end of the recording until the voice note is sealed: the speaker says
        the self-check's result, the first recording's notice, the second's (from its press
        on), the prompt, then the note is listened to, in turn."""
        if not self.note:
            return 0.0
        second = max(self.seconds / 2, self.selfcheck_said + self.notice)
        spoken = second + self.notice + self.prompt + self.note
        return max(0.0, spoken - self.seconds)

    @property
    def total(self) -> float:
        return _START_S + self.seconds + self.speech_after + _DOCK_S

    def describe(self) -> str:
        after = (f"{self.speech_after:.0f} s more for what the device says (the self-check "
                 f"result, a {self.notice:.0f} s notice per recording, the voice-note prompt) "
                 f"and a {self.note:g} s voice note"
                 if self.note else "no voice note (audio is off)")
        return (f"demo: about {self.total:.0f} s: start and self-check {_START_S:g} s, "
                f"{self.seconds:g} s of recording in two recordings, {after}, "
                f"{_DOCK_S:g} s for the dock pull and verify")


def plan(config: Config, config_path: Path, seconds: float) -> Plan:
    """The demo's timing from the configuration and the lengths of the spoken files."""
    hold = config.gpio.stop_hold_seconds
    if seconds < 2 * hold:
        raise ConfigError(f"--seconds {seconds:g}: the demo records twice, each recording "
                          f"ending with a {hold:g} s hold of the button: at least "
                          f"{2 * hold:g} s")
    folder, languages = voice_folder(config, config_path), config.voice.languages
    return Plan(seconds, hold, _spoken(folder, languages, "selfcheck-pass"),
                _spoken(folder, languages, "notice") if config.voice.notice_on_record else 0.0,
                _spoken(folder, languages, "voice-note-prompt"),
                _NOTE_SECONDS if config.audio.enabled else 0.0)


def run_demo(config_path: Path | None, store: Path | None, seconds: float,
             mqtt: str | None = None, evidence: Path | None = None) -> int:
    began = time.monotonic()
    store = store or Path(tempfile.mkdtemp(prefix="bodycam-demo-"))
    evidence = evidence or store.parent / f"{store.name}-evidence"
    config, config_path = load_config(config_path, store, mqtt)
    timing = plan(config, config_path, seconds)
    print(timing.describe(), flush=True)
    config, dock_tls = _docked(config, store, evidence)
    note = config.voice_note.model_copy(update={"max_s": _NOTE_SECONDS})
    config = config.model_copy(update={"voice_note": note})
    daemon = Daemon(config, config_path)
    thread = threading.Thread(target=daemon.run, name="daemon",
                              kwargs={"install_signals": False, "selfcheck_at_start": False})
    thread.start()
    if not daemon.ready.wait(30):
        raise RuntimeError("the daemon did not come up within 30 s")
    _say(f"device {config.device.id} up; store {store}")
    _say("pre-shift self-check")
    print(daemon.selfcheck().render(), flush=True)
    half = seconds / 2
    since = len(_records(store))  # a store used before holds earlier demos' records
    _say(f"press: recording starts, the notice is played; {half:g} s of recording")
    pressed = time.monotonic()
    daemon.controls.press()
    _sleep_until(pressed + half / 2)
    _say("a short press marks the moment important (重要标记), and the PHOTO button takes a "
         "still, while the recording goes on")
    daemon.controls.press()
    daemon.post(PhotoPressed("button"))
    _sleep_until(pressed + half - timing.hold)
    _say(f"hold for {timing.hold:g} s: recording stops")
    daemon.controls.press(long=True)
    _say("press again within the same incident: an interruption, the officer is asked why; "
         f"{half:g} s of recording")
    pressed = time.monotonic()
    daemon.controls.press()
    _sleep_until(pressed + half - timing.hold)
    _say(f"hold for {timing.hold:g} s: recording stops")
    daemon.controls.press(long=True)
    reached = daemon.telemetry is not None and daemon.telemetry.connected.is_set()
    if not _wait_for(store, since, "record_stop", 2, 30):
        raise RuntimeError("the stop gestures' record_stop records were not sealed in 30 s")
    if timing.note:
        _say(f"the device says the notice and asks why (about {timing.speech_after:.0f} s); "
             f"the officer explains for {_NOTE_SECONDS:g} s, and the note is sealed")
        if not _wait_for(store, since, "voice_note", 1, timing.speech_after + 30):
            _say("no voice note was sealed (the log says why); docking without it")
    _say(f"docked: the dock pulls, verifies and takes custody into {evidence}")
    docked, pulled = _dock_pull(daemon, evidence, dock_tls)
    daemon.post(Shutdown("demo finished"))
    thread.join()

    report = verify_store(store)
    records = _records(store)
    gaps = sum(1 for finding in report.findings if finding.kind in ("gap", "overlap"))
    first = sorted((store / "sealed").glob("*.ts"))
    pre_event = _pre_event_seconds(records)
    print(f"\nself-check: {_selfcheck_line(records)}\n"
          f"notice:     {_notice_line(records)}\n"
          f"segments:   {report.segments} in {report.recordings} recording(s)\n"
          f"duration:   {report.recorded_us / 1e6:.1f} s of video: "
          f"{report.recorded_us / 1e6 - pre_event:.1f} s from the presses on "
          f"(--seconds {seconds:g}) and {pre_event:.1f} s of pre-event buffer\n"
          f"frames:     {report.video_frames}\n"
          f"gaps:       {gaps}\n"
          f"marks:      {len(report.marks)}; photos: "
          f"{sum(1 for r in records if r['type'] == 'photo')}\n"
          f"interrupt:  {_interruption_line(records)}\n"
          f"voice note: {_voice_note_line(records)}\n"
          f"verify:     {report.summary()}\n"
          f"telemetry:  {_telemetry_line(daemon, reached)}")
    print(pulled)
    if first:
        print(f"play:       ffplay {first[0]}")
    print(f"run time:   {time.monotonic() - began:.1f} s (about {timing.total:.0f} s "
          "estimated)")
    return 0 if report.ok and docked else 1


def _docked(config: Config, store: Path, evidence: Path) -> tuple[Config, DockLink]:
    """The demo's own agency PKI (device side into the store's keys/), and [dock] on."""
    keys = Store(store).prepare().keys
    pki = write_dock_pki(keys, load_or_create_device_key(keys),
                         evidence.parent / f"{evidence.name}-dock-tls", config.device.id,
                         "DEMO-DOCK")
    dock = config.dock.model_copy(update={"enabled": True, "address": "127.0.0.1", "port": 0})
    return (config.model_copy(update={"dock": dock}),
            DockLink(pki.dock_cert, pki.dock_key, pki.device_ca))


def _wait_for(store: Path, since: int, kind: str, count: int, timeout: float) -> bool:
    """Whether `count` records of `kind` were sealed after the first `since` within
    `timeout` (after the last record_stop, the last segment is in sealed/)."""
    deadline = time.monotonic() + timeout
    while sum(r["type"] == kind for r in _records(store)[since:]) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def _spoken(folder: Path, languages: list[str], phrase: str) -> float:
    """How long the speaker takes to say `phrase` in every language (0 for a missing file:
    the voice skips it)."""
    seconds = 0.0
    for language in languages:
        with contextlib.suppress(OSError, wave.Error, EOFError), \
                wave.open(str(folder / f"{phrase}-{language}.wav"), "rb") as wav:
            seconds += wav.getnframes() / wav.getframerate()
    return seconds


def _dock_pull(daemon: Daemon, evidence: Path, link: DockLink) -> tuple[bool, str]:
    """Whether the dock took custody of a copy that verifies, and the lines that say so."""
    url = f"https://127.0.0.1:{daemon.offload.port}"
    result = asyncio.run(pull(url, evidence, link, "demo operator"))
    copy = verify_store(result.folder)
    custody = (f"record {result.custody_seq} sealed on the device, receipt in "
               f"{result.folder / 'receipts'}" if result.ok else f"REFUSED: {result.problem}")
    return result.ok and copy.ok, (
        f"dock pull:  {len(result.fetched)} files, {result.bytes_fetched / 1e6:.1f} MB over "
        f"mutual TLS from {url}\n"
        f"custody:    {custody}\n"
        f"evidence:   {result.folder} ({copy.summary()})\n"
        f"            check it again with: bodycam verify {result.folder}")


def _records(store: Path) -> list[dict[str, Any]]:
    return read_bodies(store / "chain.jsonl")


def _last(records: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((r for r in reversed(records) if r["type"] == kind), None)


def _pre_event_seconds(records: list[dict[str, Any]]) -> float:
    """The video each recording's first segment held from before its press."""
    return sum(r["payload"]["pre_event"]["duration_us"] for r in records
               if r["type"] == "segment_sealed" and "pre_event" in r["payload"]) / 1e6


def _selfcheck_line(records: list[dict[str, Any]]) -> str:
    if not (check := _last(records, "self_check")):
        return "not run"
    payload = check["payload"]
    failing = [i["name"] for i in payload["items"] if i["status"] != "pass"]
    return (f"{payload['overall'].upper()}, {len(payload['items'])} items, sealed as record "
            f"{check['seq']}" + (f" (not passed: {', '.join(failing)})" if failing else ""))


def _notice_line(records: list[dict[str, Any]]) -> str:
    if not (notice := _last(records, "notice_played")):
        return "not played"
    parts = notice["payload"]["parts"]
    return (f"played {', '.join(p['language'] for p in parts)} from {parts[0]['started']}, "
            f"sealed as record {notice['seq']}")


def _interruption_line(records: list[dict[str, Any]]) -> str:
    if not (record := _last(records, "interruption")):
        return "none"
    gap = record["payload"]
    return (f"{gap['cause']} from recording {gap['recording_before']} to "
            f"{gap['recording_after']}, {gap['start']} to {gap['end']}, sealed as record "
            f"{record['seq']}")


def _voice_note_line(records: list[dict[str, Any]]) -> str:
    if not (record := _last(records, "voice_note")):
        return "none"
    note = record["payload"]
    return (f"{note['duration_ms'] / 1000:.1f} s for interruption {note['interruption']}, "
            f"{'explained' if note['explained'] else 'UNEXPLAINED'} (ended by "
            f"{note['ended_by']}), sealed as {note['file']}")


def _telemetry_line(daemon: Daemon, reached: bool) -> str:
    """Whether the demo reached a broker (`reached`: connected before shutdown)."""
    telemetry = daemon.telemetry
    if telemetry is None:
        return "off (no broker configured; --mqtt mqtt://host:port publishes)"
    kept = f"{len(telemetry.outbox)} event(s) left in {telemetry.outbox.path}"
    if not reached:
        return f"{daemon.config.mqtt.url} not reachable: {kept}"
    return (f"published to {daemon.config.mqtt.url}: {telemetry.delivered} event(s) "
            f"delivered on {telemetry.topics.events}, status and availability; {kept}")


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)
