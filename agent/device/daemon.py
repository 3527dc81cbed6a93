"""The daemon: hardware events in, one state machine deciding, recorder and chain as its services.

Read `run` top to bottom: open the store and the chain, seal a boot record,
start the camera feeding the recorder, wire the buttons, the fault watch and the
control socket to the event queue, check the device, then handle events until
shutdown, and seal on the way out.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from agent import __version__
from agent.config import Config, voice_folder
from agent.device.chain_index import ChainIndex
from agent.device.control import ControlServer
from agent.device.cues import Cues
from agent.device.enrollment import enrolled_identity
from agent.device.faults import FaultWatch
from agent.device.heat_power import HeatPowerWatch, take_power_marker
from agent.device.indicators import lights
from agent.device.interruptions.camera_restart import leave_open, take_open
from agent.device.interruptions.gaps import Gap, Interruptions, gap_now
from agent.device.interruptions.voice_note import VoiceNoteTaker
from agent.device.offload.announce import Announcer
from agent.device.offload.custody import Ledger, export_backlog
from agent.device.offload.purge import Purger
from agent.device.offload.server import DockedDevice, OffloadServer
from agent.device.photo import PhotoTaker
from agent.device.recording.recorder import Recorder
from agent.device.recording.recovery import CutRecording, move_orphans_back, recover
from agent.device.selfcheck import SelfCheckResult, Status, device_under_check, run_selfcheck
from agent.device.state import (
    AudioHeld,
    AudioPressed,
    ButtonHeld,
    ButtonPressed,
    ButtonTapped,
    Event,
    Fault,
    FunctionHeld,
    FunctionPressed,
    HealthChanged,
    MarkAsked,
    Mode,
    PhotoPressed,
    Shutdown,
    State,
    StateMachine,
    TriggerStart,
)
from agent.device.telemetry.mqtt import Telemetry, open_telemetry
from agent.device.telemetry.status import StatusSources, device_status, station_status
from agent.device.voice import Voice
from agent.device.watchdog import Watchdog, take_marker
from agent.evidence.age import encryption_record
from agent.evidence.chain import Chain, current_boot_id, parse_line
from agent.evidence.keys import (
    REPAIR_RECORD,
    KeyMaterialError,
    fingerprint,
    load_or_create_device_key,
    load_recipients,
    repair_public_keys,
)
from agent.evidence.store import Store
from agent.sdnotify import Notifier
from hal.absent import open_or_absent
from hal.audio import AbsentSpeaker, open_microphone, open_speaker
from hal.battery import open_battery
from hal.camera.base import AbsentCamera, Camera
from hal.camera.factory import expected_layout, open_camera
from hal.clock import open_clock
from hal.gnss import Gnss, location_fields, open_gnss, overlay_position
from hal.gpio import AbsentControls, Gestures, Health, OfficerControls
from hal.storage import SimulatedStorageStall
from hal.thermal import open_thermal
from hal.triggers import TriggerInputs

log = logging.getLogger(__name__)

_LOCATE_PULSES = 5
# The longest the event loop waits for an event. The kernel gives a process's SIGTERM to any
# of its threads that does not block it (a thread that starts threads, as the simulated
# camera's encoder does for every frame, may take it), and Python then runs the handler only
# when the main thread next runs: waiting here without end, it never did, and the daemon
# never left. So the loop comes round at least this often, and a signal acts within it.
_EVENT_WAIT_S = 0.5
_INDEXING_EXTEND_S = 60.0  # more time to start, asked after each batch the index takes
_HEALTH = {Status.PASS: Health.OK, Status.WARN: Health.WARNING, Status.FAIL: Health.FAULT}


class Daemon:
    def __init__(self, config: Config, config_path: Path) -> None:
        self.config = config
        self.config_path = config_path
        self.store = Store(config.store_path)
        # SimpleQueue: the signal handlers post here on the main thread, which may be inside
        # get(); queue.Queue's put would then wait for the lock that get holds, for ever.
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
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
        self.boot_id = current_boot_id()
        self.voice_notes: VoiceNoteTaker | None = None
        self.photos: PhotoTaker | None = None
        self.interruptions: Interruptions | None = None
        self.faults: FaultWatch | None = None
        self._stopped: dict[str, Any] | None = None  # the last record_stop, for the next gap
        self._officer_stop: tuple[Gap, float] | None = None
        self.telemetry: Telemetry | None = None
        self.key: Ed25519PrivateKey | None = None  # the signing key, once the chain is open
        self.recipients: list[X25519PublicKey] = []  # the agency's, when encrypting
        self.index: ChainIndex | None = None  # what the chain says, without reading all of it
        self.ledger: Ledger | None = None
        self.purger: Purger | None = None
        self.offload: OffloadServer | None = None
        self.announcer: Announcer | None = None
        self.absent: dict[str, str] = {}  # parts that could not be opened, and why
        self.gnss: Gnss | None = None
        self.triggers: TriggerInputs | None = None
        self.notifier = Notifier()
        self.watchdog: Watchdog | None = None

    def post(self, event: Event) -> None:
        """Thread-safe: button callbacks, the control socket and signals all come through here."""
        self._events.put(event)

    def check_once(self) -> SelfCheckResult:
        """`bodycam selfcheck` with no daemon running: start, check, say it, shut down.

        Starts on the caller's thread, so that a device that cannot start says why."""
        server = self._start(install_signals=False, selfcheck_at_start=False)
        thread = threading.Thread(target=self._serve, args=(server,), name="daemon")
        thread.start()
        try:
            result = self.selfcheck()
            self.voice.flush()
            return result
        finally:
            self.post(Shutdown("self-check done"))
            thread.join()

    def run(self, install_signals: bool = True, selfcheck_at_start: bool | None = None) -> int:
        return self._serve(self._start(install_signals, selfcheck_at_start))

    def _start(self, install_signals: bool, selfcheck_at_start: bool | None) -> ControlServer:
        history = self._open_chain()
        self._start_services(history)
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
        self.notifier.ready(self._status_line(self.machine.state))
        return server

    def _serve(self, server: ControlServer) -> int:
        """Handle events until shutdown, then seal on the way out. Exits EX_TEMPFAIL when it
        ends itself for systemd to start it again (Restart=on-failure)."""
        shutdown_reason, restart = "unknown", False
        try:
            while self.machine.state is not State.SHUTTING_DOWN:
                self.watchdog.tick()
                try:
                    event = self._events.get(
                        timeout=min(self.watchdog.beat_s or _EVENT_WAIT_S, _EVENT_WAIT_S))
                except queue.Empty:
                    continue
                if isinstance(event, Shutdown):
                    shutdown_reason, restart = event.reason, event.restart
                self.machine.handle(event)
        finally:
            if restart:  # first: whatever happens on the way out, the next start knows why
                leave_open(self.store.root, shutdown_reason, self.recorder.last_frame_mono_ns,
                           self.interruptions.pending)
            log.info("shutting down: %s", shutdown_reason)
            self.notifier.stopping(f"shutting down: {shutdown_reason}")
            server.close()
            self._stop_dock()
            if self.telemetry:
                self.telemetry.stop_commands()
            if self.triggers:
                self.triggers.close()
            if self.gnss:
                self.gnss.close()
            self.interruptions.close()
            self.photos.close()  # the photos asked for are sealed while the camera runs
            self.faults.close()
            self.camera.stop()
            self.recorder.close()
            self.cues.close()
            self.voice.close()
            self.controls.close()
            self.chain.append("shutdown", {"reason": shutdown_reason})
            if self.telemetry:  # after the shutdown record, so that it is sent too
                self.telemetry.close()
            self.chain.close()
            self.ledger.refresh()  # the records of this run, so the next start reads none
            self.index.close()
            self.notifier.close()
        return os.EX_TEMPFAIL if restart else 0

    def _open_chain(self) -> list[dict[str, Any]]:
        """The store, the device key and the chain, with a boot record saying what started
        (and a record for each public key file written again); returns the records recovery
        needs as found (the chain index finds them: start-up reads only what the index has
        not seen yet)."""
        self.store.prepare()
        key = self.key = load_or_create_device_key(self.store.keys, self.store.chain)
        self.recipients = load_recipients(self.config.encryption, self.store.keys)
        self.chain = Chain(self.store.chain, key, self._identity, self.clock.state, self.boot_id)
        self.index = ChainIndex.open(self.store.chain, progress=self._indexing)
        self.ledger = Ledger(self.index)
        self.telemetry = open_telemetry(self.config, self.config_path, self.chain, self.store,
                                        self.index, lambda: enrolled_identity(self.store.keys, key))
        history = self.index.start_records(self.store.sealed)
        keys_history = self.index.key_records()
        move_orphans_back(self.store, history, self.chain.head.seq)
        if not self.store.hold_reserve(self.config.store.reserve_bytes):
            log.critical("the store has no room for its %d-byte reserve: a full disk may not "
                         "be recorded in the chain", self.config.store.reserve_bytes)
        self.chain.append("boot", {
            "version": __version__,
            "config": str(self.config_path),
            "config_sha256": hashlib.sha256(self.config_path.read_bytes()).hexdigest(),
            "key_fingerprint": fingerprint(key.public_key()),
            "camera": self.config.camera.backend,
            "encryption": (encryption_record(self.recipients) if self.recipients else None),
            "tail_repair": (None if self.chain.repair is None else
                            {"torn_bytes": self.chain.repair.torn_bytes,
                             "kept_in": self.chain.repair.kept_in}),
        })
        repair_public_keys(self.store.keys, key, keys_history,
                           lambda payload: self.chain.append(REPAIR_RECORD, payload))
        return history

    def _indexing(self, done: int, size: int) -> None:
        """A first start after an upgrade reads the whole chain into its index, once: a
        year's takes minutes on a Pi, so systemd is told it is starting, not hung."""
        self.notifier.starting(f"indexing the chain: {done * 100 // size} % of "
                               f"{size / 1e6:.0f} MB", _INDEXING_EXTEND_S)

    def _start_services(self, history: list[dict[str, Any]]) -> None:
        """The camera feeding the recorder, the voice, the buttons and LEDs, the cues, the
        fault watch and the officer's spoken records."""
        config, absent = self.config, self.absent
        self.battery = open_or_absent("battery", lambda: open_battery(config.battery,
                                                                      self.store.root),
                                      lambda _reason: None, absent)
        self.camera = open_or_absent("camera",
                                     lambda: open_camera(config, self._officer, self._position),
                                     lambda reason: AbsentCamera(expected_layout(config), reason),
                                     absent)
        cut = recover(self.store, self.chain, self.camera.layout, history)
        thermal = open_or_absent("thermal", lambda: open_thermal(config.thermal, self.store.root),
                                 lambda _reason: None, absent)
        self.faults = FaultWatch(self.config, self.store, self._fault_event,
                                 lambda: self.recorder.stats.frames_seen, self._restart_camera,
                                 self._give_up_on_camera,
                                 self.battery, thermal)
        self.gnss = open_gnss(config.gnss)
        self.recorder = Recorder(self.camera.layout, self.store, self.chain,
                                 self.config.recorder, on_fault=self.faults.report,
                                 recipients=self.recipients,
                                 location=lambda: location_fields(self.gnss),
                                 write_gate=(SimulatedStorageStall(self.store.root).wait
                                             if self.config.camera.backend == "sim" else None))
        self.camera.start(self.recorder)
        self.voice = Voice(open_or_absent("speaker", lambda: open_speaker(config.audio),
                                          AbsentSpeaker, absent),
                           voice_folder(self.config, self.config_path),
                           self.config.voice.languages, self.chain,
                           self.config.voice.notice_text)
        self.controls = open_or_absent("button and LEDs", lambda: OfficerControls(
            self.config.gpio, Gestures(
                press=lambda g: self.post(ButtonPressed(g)),
                tap=lambda g: self.post(ButtonTapped(g)),
                hold=lambda g: self.post(ButtonHeld(g)),
                audio_press=lambda g: self.post(AudioPressed(g)),
                audio_hold=lambda g: self.post(AudioHeld(g)),
                function_press=lambda: self.post(FunctionPressed()),
                function_hold=lambda: self.post(FunctionHeld()),
                photo_press=lambda: self.post(PhotoPressed("button")))), AbsentControls, absent)
        if config.gpio.trigger_pins:
            self.triggers = open_or_absent("triggers", self._open_triggers,
                                           lambda _reason: None, absent)
        self.watchdog = Watchdog(self.notifier, self.store.root, lambda: {
            **self.recorder.busy_s(), "fault watch": self.faults.stuck_s()})
        self.machine = StateMachine(self)
        self.cues = Cues(self.config, self.chain, self.voice, self.controls, self.battery,
                         self.clock, recording=lambda: self.machine.state is State.RECORDING,
                         on_change=lambda: self.post(HealthChanged()),
                         export_overdue=self._export_overdue if self.config.dock.export_alarm
                         else None)
        if thermal is not None:
            self.cues.add_reminder(HeatPowerWatch(
                config.thermal, thermal, self.store.root, self.cues.raise_alarm,
                self.cues.clear_alarm, config.cues.check_interval_s).check)
        self.cues.start()
        self.voice_notes = VoiceNoteTaker(
            self.config.voice_note, self.store, self.chain, self.voice,
            lambda: open_microphone(self.config.audio),
            lambda: self.controls.button.is_pressed or self.controls.function_button.is_pressed,
            self.recipients)
        self.interruptions = Interruptions(
            self.config.voice_note, self.chain, self.voice_notes, self.voice,
            self.controls.pulse, listen=self.config.audio.enabled,
            unexplained_seqs=self.index.unexplained())
        self.cues.add_reminder(self.interruptions.tick)
        self.photos = PhotoTaker(self.store, self.chain, lambda: self.camera, self.recipients,
                                 taken=lambda _record: self.controls.pulse(1),
                                 failed=lambda _reason: self._photo_failed())
        self.faults.start()
        if self.telemetry:
            sources = self._status_sources()
            self.telemetry.start(lambda: device_status(sources), self._remote_commands())
        self._start_dock()
        hung = take_marker(self.store.root)
        power = take_power_marker(self.store.root)
        gaps = [_power_loss_gap(recording, hung, power) for recording in cut]
        gaps += take_open(self.store.root)
        for gap in gaps:
            self.interruptions.begin(gap)
        if gaps:
            # It was recording (or asked to) when it ended: record again at once, without
            # the officer, in the mode the officer chose (sound only stays sound only).
            audio = any(self._mode_of(gap.recording_before) is Mode.AUDIO for gap in gaps)
            self.post(TriggerStart("resume_after_interruption",
                                   Mode.AUDIO if audio else Mode.VIDEO))

    def _mode_of(self, recording: int | None) -> Mode:
        """The mode of a recording, from its record_start (video when not known)."""
        for _, line in self.index.read_lines([recording] if recording else []):
            try:
                start = parse_line(line)[2]
            except ValueError:
                break
            if start.get("type") == "record_start" and start.get("seq") == recording and \
                    start.get("payload", {}).get("mode") == Mode.AUDIO.value:
                return Mode.AUDIO
        return Mode.VIDEO

    def _fault_event(self, event: Event) -> None:
        """A fault raised or cleared: the alarm at once, whatever the state; then decide."""
        if isinstance(event, Fault):
            self.cues.raise_alarm(event.cause, event.detail)
        else:
            self.cues.clear_alarm(event.cause, "cleared")
        self.post(event)

    def _give_up_on_camera(self, reason: str) -> None:
        """The fault watch's last resort (its thread): only a new process gets the camera
        back, so end, leaving the interruption open for the next start."""
        self.post(Shutdown(f"camera_restart_failed: {reason}", restart=True))

    def _restart_camera(self) -> None:
        """A new camera in place of one that stopped delivering frames."""
        old = self.camera
        stopping = threading.Thread(target=old.stop, name="camera-stop", daemon=True)
        stopping.start()
        stopping.join(self.config.camera.stall_s)
        if stopping.is_alive():
            log.error("the failed camera did not stop within %g s; left behind",
                      self.config.camera.stall_s)
        self.recorder.discard_buffered()
        self.camera = open_camera(self.config, self._officer, self._position)
        self.absent.pop("camera", None)
        self.camera.start(self.recorder)

    def _open_triggers(self) -> TriggerInputs:
        if isinstance(self.controls, AbsentControls):
            raise RuntimeError(f"no GPIO: {self.controls.reason}")
        return TriggerInputs(self.config.gpio, self.controls.factory,
                             lambda name: self.post(TriggerStart(f"external:{name}")))

    # --- actions the state machine takes ---------------------------------------------------

    def start_recording(self, trigger: str, mode: Mode) -> None:
        recording = self.recorder.start(trigger, self.camera.origin_ns,
                                        audio_only=mode is Mode.AUDIO)
        log.info("%s recording %d started by %s", mode.value, recording, trigger)
        if self._officer_stop:
            gap, stopped_at = self._officer_stop
            if time.monotonic() - stopped_at <= self.config.recorder.same_incident_s:
                self.interruptions.begin(gap)
            self._officer_stop = None
        if self.config.voice.notice_on_record:
            self.voice.notice(recording)
        self.interruptions.resumed(recording)

    def stop_recording(self, reason: str) -> None:
        self._stopped = self.recorder.stop(reason)
        log.info("recording stopped (%s): %d segments", reason,
                 self._stopped["payload"]["segments"])
        if "export_overdue" in self.cues.active:  # Art. 20: remind at the end of a recording
            self.voice.say("export-overdue")
        if reason == "button_hold":
            gap = gap_now("officer_stop_restart", "stopped by the officer and started again "
                          "within one incident", self._stopped, self.boot_id)
            self._officer_stop = (gap, time.monotonic())

    def interrupted(self, cause: str, detail: str) -> None:
        """A fault stopped the recording (or a start): the gap opens, to be sealed on resume."""
        since = self.recorder.last_frame_mono_ns if cause == "camera_fault" else None
        self.interruptions.begin(gap_now(cause, detail, self._stopped, self.boot_id, since))
        self._stopped = None

    def interruption_ended(self, reason: str) -> None:
        self.interruptions.ended(reason)

    def mark(self, source: str) -> None:
        """An important mark (重要标记) on the recording under way; one pulse says it is taken."""
        record = self.chain.append("mark", {"recording": self.recorder.recording_id,
                                            "source": source})
        self.controls.pulse(1)
        log.info("recording %d marked important (%s), record %d",
                 record["payload"]["recording"], source, record["seq"])

    def explain(self) -> None:
        self.interruptions.explain()

    def declare_exemption(self) -> None:
        self.interruptions.declare_exemption()

    def take_photo(self, source: str) -> None:
        self.photos.request(self.recorder.recording_id, source)

    def refuse_photo(self, why: str) -> None:
        log.warning("no photo taken while %s", why)
        self._photo_failed()

    def _photo_failed(self) -> None:
        """Three pulses and `photo-failed`: the officer must know no photo was sealed."""
        self.controls.pulse(3)
        self.voice.say("photo-failed")

    def show(self, state: State, mode: Mode | None) -> None:
        if state is not State.SHUTTING_DOWN:
            self.controls.show(lights(state, mode, self.camera.layout.audio is not None,
                                      self._low_battery(), self.health is Health.FAULT))
        if self.telemetry:
            self.telemetry.status_changed()
        self.notifier.status(self._status_line(state))

    def _low_battery(self) -> bool:
        """The low-battery alarm raised, or the battery too low to record (a fault)."""
        alarm = self.cues is not None and "battery_low" in self.cues.active
        return alarm or (self.machine is not None and "battery_critical" in self.machine.faults)

    def _status_line(self, state: State) -> str:
        """systemctl status shows it: what the device does, how it is, what is missing."""
        absent = f"; absent: {', '.join(sorted(self.absent))}" if self.absent else ""
        return f"{state.value}, health {self.health.value}{absent}"

    # --- what the fleet may ask over MQTT (nothing that stops a recording or deletes) -------

    def _remote_commands(self) -> dict[str, Callable[[], dict[str, Any]]]:
        return {"locate": self.locate, "selfcheck": lambda: self.selfcheck().as_record()}

    def locate(self) -> dict[str, Any]:
        """Buzz and flash green so the device can be found; the red LED keeps meaning recording."""
        self.controls.pulse(_LOCATE_PULSES)
        self.controls.status_led.blink(on_time=0.1, off_time=0.1, n=_LOCATE_PULSES * 3,
                                       background=False)
        self.post(HealthChanged())  # back to the LED pattern for the state and health
        return {"pulses": _LOCATE_PULSES}

    # --- the self-check -------------------------------------------------------------------

    def selfcheck(self) -> SelfCheckResult:
        """Check, seal, show and say the result; it never stops a recording."""
        result = run_selfcheck(device_under_check(
            self.config, self.store, self.clock, self.battery, self.ledger, self.index,
            lambda: self.recorder.stats.frames_seen,
            lambda: self.controls.button.is_pressed, absent=self.absent, gnss=self.gnss))
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

    def _officer(self) -> str:
        return self._identity()[1]

    def _position(self) -> str:
        """For the overlay: the GNSS opens after the camera, so it is looked up per frame."""
        return overlay_position(self.gnss)

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
            "mode": self.machine.mode.value if self.machine.mode else None,
            "health": self.health.value,
            "alarms": sorted(self.cues.active),
            "faults": dict(self.machine.faults),
            "unexplained_interruptions": sorted(self.interruptions.unexplained),
            "recording": self.recorder.recording_id,
            "current_segment": self.recorder.current_segment,
            "segments_sealed": self.recorder.stats.segments_sealed,
            # What a power cut could have lost at worst so far (docs/recorder.md).
            "longest_unsynced_ms": round(self.recorder.stats.longest_unsynced_s * 1000),
            "chain_head": head.as_dict(),
            "store": str(self.store.root),
            "absent": dict(self.absent),
        }

    def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request["cmd"]
        if command == "status":
            return {"ok": True, **self.status()}
        if command == "trigger":
            self.post(TriggerStart(f"external:{request.get('source', 'control')}"))
            return {"ok": True}
        if command == "press":
            self.controls.press(long=bool(request.get("long")),
                                function=bool(request.get("function")),
                                audio=bool(request.get("audio")))
            return {"ok": True}
        if command == "mark":
            self.post(MarkAsked("control"))
            return {"ok": True}
        if command == "photo":
            self.post(PhotoPressed("control"))
            return {"ok": True}
        if command == "selfcheck":
            return {"ok": True, **self.selfcheck().as_record()}
        raise ValueError(f"unknown command {command!r}")

    # --- docking ------------------------------------------------------------------------

    def _start_dock(self) -> None:
        """Purge under custody as the policy says; serve the dock when [dock] enabled.

        A dock link that cannot start (no dock CA) is logged and left off: recording never
        waits for it. A device not yet enrolled serves only its enrollment.
        """
        self.purger = Purger(self.store, self.chain, self.ledger, self.config.dock)
        self.purger.start()
        if not self.config.dock.enabled:
            return
        server = None
        try:
            sources = self._status_sources()
            server = OffloadServer(DockedDevice(
                self.config.device.id, self.key, self.store, self.chain, self.ledger, self.index,
                self.clock, self.purger.run, lambda: self._identity()[1],
                self.config.retention, lambda: station_status(sources)), self.config.dock)
            server.start()
        except (OSError, KeyMaterialError) as exc:
            log.error("offload server not started: %s", exc)
            if server is not None:
                server.close()
            return
        self.offload = server
        if self.config.dock.announce:
            self.announcer = Announcer(self.config.device.id, self.config.dock.address,
                                       server.port)
            self.announcer.start()

    def _status_sources(self) -> StatusSources:
        return StatusSources(self.config, self.status, self.clock, self.ledger, self.battery,
                             self.gnss)

    def _stop_dock(self) -> None:
        if self.announcer:
            self.announcer.close()
        if self.offload:
            self.offload.close()
        if self.purger:
            self.purger.close()

    def _export_overdue(self) -> tuple[bool, str]:
        backlog = export_backlog(self.ledger, self.config.selfcheck.export_deadline_hours)
        return backlog.overdue, backlog.describe()


def _power_loss_gap(cut: CutRecording, hung: dict[str, Any] | None,
                    power: dict[str, Any] | None) -> Gap:
    """The gap a power cut or crash left: from the last packet on disk to the restart; a
    `watchdog` gap when the last run said it was hung and withheld the watchdog; an
    `under_voltage` or `throttled` gap when the last run's firmware said so until the end."""
    detail = f"recording {cut.id} found open at start"
    power_cause = power.get("cause") if power and not hung else None
    if hung:
        detail += f"; since {hung['since']} the daemon was hung ({hung['reason']})"
    elif power_cause:
        detail += f"; since {power.get('since')} the firmware reported {power.get('detail')}"
    return Gap("watchdog" if hung else "under_voltage" if power_cause == "under_voltage"
               else "throttled" if power_cause == "throttled" else "power_loss_or_crash", detail,
               cut.id, cut.last_segment["file"] if cut.last_segment else None,
               cut.last_media_wall, None, cut.start["boot_id"])


def _slug(name: str) -> str:
    return name.replace(" ", "-").lower()
