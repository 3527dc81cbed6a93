"""The daemon: hardware events in, one state machine deciding, recorder and chain as its services.

Read `run` top to bottom: open the store and the chain, seal a boot record,
start the camera feeding the recorder, wire the button and the control socket
to the event queue, then handle events until shutdown, and seal on the way out.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

from agent import __version__
from agent.chain import Chain
from agent.config import Config
from agent.control import ControlServer
from agent.keys import fingerprint, load_or_create_device_key
from agent.recorder import Recorder
from agent.state import (
    ButtonHeld,
    ButtonPressed,
    Event,
    Shutdown,
    State,
    StateMachine,
    TriggerStart,
)
from agent.store import Store
from hal.camera import Camera, open_camera
from hal.clock import KernelClock, SimulatedClock
from hal.gpio import OfficerControls

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, config: Config, config_path: Path) -> None:
        self.config = config
        self.config_path = config_path
        self.store = Store(config.store_path)
        self._events: queue.Queue[Event] = queue.Queue()
        self.ready = threading.Event()
        self.machine: StateMachine | None = None
        self.recorder: Recorder | None = None
        self.controls: OfficerControls | None = None
        self.camera: Camera | None = None
        self.chain: Chain | None = None

    def post(self, event: Event) -> None:
        """Thread-safe: button callbacks, the control socket and signals all come through here."""
        self._events.put(event)

    def run(self, install_signals: bool = True) -> int:
        self.store.prepare()
        key = load_or_create_device_key(self.store.keys)
        clock = SimulatedClock() if self.config.camera.backend == "sim" else KernelClock()
        self.chain = Chain(self.store.chain, key, self._identity, clock.state, _boot_id())
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
        self.camera = open_camera(self.config)
        self.recorder = Recorder(self.camera.layout, self.store, self.chain,
                                 self.config.recorder)
        self.camera.start(self.recorder)
        self.controls = OfficerControls(self.config.gpio,
                                        on_press=lambda g: self.post(ButtonPressed(g)),
                                        on_hold=lambda g: self.post(ButtonHeld(g)))
        self.machine = StateMachine(self)
        server = ControlServer(self.store.control_socket, self._control)
        server.start()
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda s, _f: self.post(Shutdown(signal.Signals(s).name)))
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
            self.camera.stop()
            self.recorder.close()
            self.controls.close()
            self.chain.append("shutdown", {"reason": shutdown_reason})
            self.chain.close()
        return 0

    # --- actions the state machine takes ---------------------------------------------------

    def start_recording(self, trigger: str) -> None:
        recording = self.recorder.start(trigger)
        log.info("recording %d started by %s", recording, trigger)

    def stop_recording(self, reason: str) -> None:
        record = self.recorder.stop(reason)
        log.info("recording stopped (%s): %d segments", reason, record["payload"]["segments"])

    def show(self, state: State) -> None:
        if state is State.RECORDING:
            self.controls.show_recording()
        elif state is State.STANDBY:
            self.controls.show_standby()

    # --- queries ------------------------------------------------------------------------

    def _identity(self) -> tuple[str, str]:
        return self.config.device.id, self.config.device.officer

    def status(self) -> dict[str, Any]:
        head = self.chain.head
        return {
            "device": self.config.device.id,
            "officer": self.config.device.officer,
            "state": self.machine.state.value,
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
        raise ValueError(f"unknown command {command!r}")


def _boot_id() -> str:
    """The kernel's id of this boot, which ties monotonic times to one power cycle."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return str(uuid.uuid4())
