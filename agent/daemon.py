"""The daemon: hardware events in, one state machine deciding, recorder and chain as its services.

Read `run` top to bottom: open the store and the chain, seal a boot record,
start the camera feeding the recorder, wire the button and the control socket
to the event queue, check the device, then handle events until shutdown, and
seal on the way out.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import signal
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any

from agent import __version__
from agent.chain import Chain
from agent.config import Config, voice_folder
from agent.control import ControlServer
from agent.cues import Cues
from agent.custody import Ledger, export_overdue
from agent.keys import fingerprint, load_or_create_device_key
from agent.offload import DockedDevice, OffloadServer
from agent.purge import Purger
from agent.recorder import Recorder
from agent.recovery import CutRecording, move_orphans_back, recover
from agent.selfcheck import SelfCheckResult, Status, device_under_check, run_selfcheck
from agent.state import (
    ButtonHeld,
    ButtonPressed,
    Event,
    HealthChanged,
    Shutdown,
    State,
    StateMachine,
    TriggerStart,
)
from agent.store import Store
from agent.voice import Voice
from agent.voice_note import VoiceNoteTaker
from hal.audio import open_microphone, open_speaker
from hal.battery import open_battery
from hal.camera import Camera, open_camera
from hal.clock import open_clock
from hal.gpio import Health, OfficerControls

log = logging.getLogger(__name__)

_HEALTH = {Status.PASS: Health.OK, Status.WARN: Health.WARNING, Status.FAIL: Health.FAULT}


class Daemon:
    def __init__(self, config: Config, config_path: Path) -> None:
        self.config = config
        self.config_path = config_path
        self.store = Store(config.store_path)
        self._events: queue.Queue[Event] = queue.Queue()
        self.ready = threading.Event()
        self._checked_health = Health.OK
        self.last_selfcheck: SelfCheckResult | None = None
        self.clock = open_clock(config.clock)
        self.machine: StateMachine | None = None
        self.recorder: Recorder | None = None
        self.controls: OfficerControls | None = None
        self.camera: Camera | None = None
        self.chain: Chain | None = None
        self.voice: Voice | None = None
        self.cues: Cues | None = None
        self.battery = None
        self._interrupted: list[CutRecording] = []
        self.unexplained: set[int] = set()
        self.voice_notes: VoiceNoteTaker | None = None
        self._note_thread: threading.Thread | None = None
        self.ledger: Ledger | None = None
        self.purger: Purger | None = None
        self.offload: OffloadServer | None = None

    def post(self, event: Event) -> None:
        """Thread-safe: button callbacks, the control socket and signals all come through here."""
        self._events.put(event)

    def check_once(self) -> SelfCheckResult:
        """`bodycam selfcheck` with no daemon running: start, check, say it, shut down."""
        thread = threading.Thread(target=self.run, kwargs={"install_signals": False,
                                                           "selfcheck_at_start": False})
        thread.start()
        self.ready.wait()
        try:
            result = self.selfcheck()
            self.voice.flush()
            return result
        finally:
            self.post(Shutdown("self-check done"))
            thread.join()

    def run(self, install_signals: bool = True, selfcheck_at_start: bool | None = None) -> int:
        self._open_chain()
        self._start_services()
        server = ControlServer(self.store.control_socket, self._control)
        server.start()
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda s, _f: self.post(Shutdown(signal.Signals(s).name)))
        if (self.config.selfcheck.run_at_start if selfcheck_at_start is None
                else selfcheck_at_start):
            threading.Thread(target=self.selfcheck, name="selfcheck", daemon=True).start()
        log.info("device %s ready, store %s", self.config.device.id, self.store.root)
        self.ready.set()
        shutdown_reason = "unknown"
        try:
            while self.machine.state is not State.SHUTTING_DOWN:
                event = self._events.get()
                if isinstance(event, Shutdown):
                    shutdown_reason = event.reason
                self.machine.handle(event)
        finally:
            server.close()
            self._stop_dock()
            if self._note_thread:
                self.voice_notes.cancel()
                self._note_thread.join()
            self.camera.stop()
            self.recorder.close()
            self.cues.close()
            self.voice.close()
            self.controls.close()
            self.chain.append("shutdown", {"reason": shutdown_reason})
            self.chain.close()
        return 0

    def _open_chain(self) -> None:
        """The store, the device key and the chain, with a boot record saying what started."""
        self.store.prepare()
        key = load_or_create_device_key(self.store.keys)
        self.chain = Chain(self.store.chain, key, self._identity, self.clock.state, _boot_id())
        self.ledger = Ledger(self.store.chain).refresh()
        move_orphans_back(self.store)
        self.chain.append("boot", {
            "version": __version__,
            "config": str(self.config_path),
            "config_sha256": hashlib.sha256(self.config_path.read_bytes()).hexdigest(),
            "key_fingerprint": fingerprint(key.public_key()),
            "camera": self.config.camera.backend,
            "tail_repair": (None if self.chain.repair is None else
                            {"torn_bytes": self.chain.repair.torn_bytes,
                             "kept_in": self.chain.repair.kept_in}),
        })

    def _start_services(self) -> None:
        """The camera feeding the recorder, the voice, the button and LEDs, the cues."""
        self.battery = open_battery(self.config.battery, self.store.root)
        self.camera = open_camera(self.config)
        self._interrupted = recover(self.store, self.chain, self.camera.layout)
        self.recorder = Recorder(self.camera.layout, self.store, self.chain,
                                 self.config.recorder)
        self.camera.start(self.recorder)
        self.voice = Voice(open_speaker(self.config.audio),
                           voice_folder(self.config, self.config_path),
                           self.config.voice.languages, self.chain,
                           self.config.voice.notice_text)
        self.controls = OfficerControls(self.config.gpio,
                                        on_press=lambda g: self.post(ButtonPressed(g)),
                                        on_hold=lambda g: self.post(ButtonHeld(g)))
        self.machine = StateMachine(self)
        self.cues = Cues(self.config, self.chain, self.voice, self.controls, self.battery,
                         self.clock, recording=lambda: self.machine.state is State.RECORDING,
                         on_change=lambda: self.post(HealthChanged()),
                         export_overdue=self._export_overdue if self.config.dock.export_alarm
                         else None)
        self.cues.start()
        self.voice_notes = VoiceNoteTaker(self.config.voice_note, self.store, self.chain,
                                          self.voice, lambda: open_microphone(self.config.audio),
                                          lambda: self.controls.button.is_pressed)
        self._start_dock()
        if self._interrupted:
            # It was recording when it died: record again at once, without the officer.
            self.post(TriggerStart("resume_after_interruption"))

    # --- actions the state machine takes ---------------------------------------------------

    def start_recording(self, trigger: str) -> None:
        recording = self.recorder.start(trigger, self.camera.origin_ns)
        log.info("recording %d started by %s", recording, trigger)
        for cut in self._interrupted:
            self._seal_interruption(cut, recording)
        self._interrupted = []
        if self.config.voice.notice_on_record:
            self.voice.notice(recording)

    def _seal_interruption(self, cut: CutRecording, resumed: int) -> None:
        """The gap from the last packet on disk to the recording that resumed after it,
        and the officer's spoken explanation of it, asked for at once."""
        record = self.chain.append("interruption", {
            "cause": "power_loss_or_crash",
            "recording_before": cut.id,
            "last_segment": cut.last_segment["file"] if cut.last_segment else None,
            "start": cut.last_media_wall,
            "start_boot_id": cut.start["boot_id"],
            "recording_after": resumed,
            "explained": False,
        })
        self.unexplained.add(record["seq"])
        if self.config.audio.enabled:
            self._note_thread = threading.Thread(target=self._take_voice_note,
                                                 args=(record["seq"],), name="voice-note")
            self._note_thread.start()

    def _take_voice_note(self, interruption: int) -> None:
        note = self.voice_notes.take(interruption)
        if note["payload"]["explained"]:
            self.unexplained.discard(interruption)
        else:
            log.warning("interruption %d is unexplained: no speech in the voice note",
                        interruption)

    def stop_recording(self, reason: str) -> None:
        record = self.recorder.stop(reason)
        log.info("recording stopped (%s): %d segments", reason, record["payload"]["segments"])
        if "export_overdue" in self.cues.active:  # Art. 20: remind at the end of a recording
            self.voice.say("export-overdue")

    def show(self, state: State) -> None:
        if state is not State.SHUTTING_DOWN:
            self.controls.show(recording=state is State.RECORDING, health=self.health)

    # --- the self-check -------------------------------------------------------------------

    def selfcheck(self) -> SelfCheckResult:
        """Check, seal, show and say the result; it never stops a recording."""
        result = run_selfcheck(device_under_check(
            self.config, self.store, self.clock, self.battery,
            lambda: self.recorder.stats.frames_seen,
            lambda: self.controls.button.is_pressed))
        self.chain.append("self_check", result.as_record())
        self.last_selfcheck = result
        self._checked_health = _HEALTH[result.overall]
        self.post(HealthChanged())
        if result.overall is Status.PASS:
            self.voice.say("selfcheck-pass")
        else:
            failed = [item.name for item in result.items if item.status is Status.FAIL]
            self.voice.say("selfcheck-fail", *(f"item-{_slug(name)}" for name in failed))
        for item in result.not_passed:
            log.warning("self-check %s: %s: %s (threshold: %s)", item.status.name, item.name,
                        item.value, item.threshold)
        return result

    # --- queries ------------------------------------------------------------------------

    @property
    def health(self) -> Health:
        """The worse of the last self-check and the alarms now raised."""
        if self._checked_health is Health.OK and self.cues and self.cues.active:
            return Health.WARNING
        return self._checked_health

    def _identity(self) -> tuple[str, str]:
        """The officer follows the last officer_assigned record; before any, the config's."""
        officer = self.ledger.officer if self.ledger and self.ledger.officer is not None \
            else self.config.device.officer
        return self.config.device.id, officer

    def status(self) -> dict[str, Any]:
        head = self.chain.head
        return {
            "device": self.config.device.id,
            "officer": self._identity()[1],
            "state": self.machine.state.value,
            "health": self.health.value,
            "alarms": sorted(self.cues.active),
            "unexplained_interruptions": sorted(self.unexplained),
            "recording": self.recorder.recording_id,
            "current_segment": self.recorder.current_segment,
            "segments_sealed": self.recorder.stats.segments_sealed,
            "chain_head": head.as_dict(),
            "store": str(self.store.root),
        }

    def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request["cmd"]
        if command == "status":
            return {"ok": True, **self.status()}
        if command == "trigger":
            self.post(TriggerStart(f"external:{request.get('source', 'control')}"))
            return {"ok": True}
        if command == "press":
            self.controls.press(long=bool(request.get("long")))
            return {"ok": True}
        if command == "selfcheck":
            return {"ok": True, **self.selfcheck().as_record()}
        raise ValueError(f"unknown command {command!r}")

    # --- docking ------------------------------------------------------------------------

    def _start_dock(self) -> None:
        """Purge under custody as the policy says; serve the dock when [dock] enabled.

        A dock link that cannot start (a missing certificate) is logged and left off:
        recording never waits for it.
        """
        self.purger = Purger(self.store, self.chain, self.ledger, self.config.dock)
        self.purger.start()
        if not self.config.dock.enabled:
            return
        server = None
        try:
            server = OffloadServer(DockedDevice(
                self.config.device.id, self.store, self.chain, self.ledger, self.clock,
                self.purger.run, lambda: self._identity()[1]), self.config.dock)
            server.start()
        except (OSError, ssl.SSLError) as exc:
            log.error("offload server not started: %s", exc)
            if server is not None:
                server.close()
            return
        self.offload = server

    def _stop_dock(self) -> None:
        if self.offload:
            self.offload.close()
        if self.purger:
            self.purger.close()

    def _export_overdue(self) -> tuple[bool, str]:
        return export_overdue(self.ledger, self.config.selfcheck.export_deadline_hours)


def _slug(name: str) -> str:
    return name.replace(" ", "-").lower()


def _boot_id() -> str:
    """The kernel's id of this boot, which ties monotonic times to one power cycle."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return str(uuid.uuid4())
