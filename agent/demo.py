"""`bodycam demo`: the whole daemon on the simulated device, driven as an officer would drive it,
then docked: a dock pulls, verifies and takes custody of what it recorded."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent.config import Config, load_config
from agent.device.daemon import Daemon
from agent.device.state import Shutdown
from agent.dock.pull import DockLink, pull
from agent.evidence.chain import read_bodies
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.store import Store
from agent.evidence.verify import verify_store
from agent.pki import write_dock_pki

_NOTE_SECONDS = 2.0


def run_demo(config_path: Path | None, store: Path | None, seconds: float,
             mqtt: str | None = None, evidence: Path | None = None) -> int:
    store = store or Path(tempfile.mkdtemp(prefix="bodycam-demo-"))
    evidence = evidence or store.parent / f"{store.name}-evidence"
    config, config_path = load_config(config_path, store, mqtt)
    config, dock_tls = _docked(config, store, evidence)
    daemon = Daemon(config, config_path)
    thread = threading.Thread(target=daemon.run, name="daemon",
                              kwargs={"install_signals": False, "selfcheck_at_start": False})
    thread.start()
    if not daemon.ready.wait(30):
        raise RuntimeError("the daemon did not come up within 30 s")
    _say(f"device {config.device.id} up; store {store}")
    _say("pre-shift self-check")
    print(daemon.selfcheck().render(), flush=True)
    _say("press: recording starts, the notice is played")
    daemon.controls.press()
    time.sleep(seconds / 2)
    _say(f"hold for {config.gpio.stop_hold_seconds:g} s: recording stops")
    daemon.controls.press(long=True)
    _say("press again within the same incident: an interruption, the officer is asked why")
    daemon.controls.press()
    if config.audio.enabled and daemon.voice_notes.listening.wait(60):
        time.sleep(_NOTE_SECONDS)  # the officer explains (the simulated microphone's tone)
        _say("press: the explanation ends and is sealed")
        daemon.controls.press()
    time.sleep(seconds / 2)
    _say(f"hold for {config.gpio.stop_hold_seconds:g} s: recording stops")
    daemon.controls.press(long=True)
    reached = daemon.telemetry is not None and daemon.telemetry.connected.is_set()
    _wait_for_stop(store)
    _say(f"docked: the dock pulls, verifies and takes custody into {evidence}")
    docked, pulled = _dock_pull(daemon, evidence, dock_tls)
    daemon.post(Shutdown("demo finished"))
    thread.join()

    report = verify_store(store)
    records = _records(store)
    gaps = sum(1 for finding in report.findings if finding.kind in ("gap", "overlap"))
    first = sorted((store / "sealed").glob("*.ts"))
    print(f"\nself-check: {_selfcheck_line(records)}\n"
          f"notice:     {_notice_line(records)}\n"
          f"segments:   {report.segments} in {report.recordings} recording(s)\n"
          f"duration:   {report.recorded_us / 1e6:.1f} s of video "
          f"(including the pre-event buffer)\n"
          f"frames:     {report.video_frames}\n"
          f"gaps:       {gaps}\n"
          f"interrupt:  {_interruption_line(records)}\n"
          f"voice note: {_voice_note_line(records)}\n"
          f"verify:     {report.summary()}\n"
          f"telemetry:  {_telemetry_line(daemon, reached)}")
    print(pulled)
    if first:
        print(f"play:       ffplay {first[0]}")
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


def _wait_for_stop(store: Path, timeout: float = 30.0) -> None:
    """Until the stop gesture's record_stop is sealed: the last segment is then in sealed/."""
    deadline = time.monotonic() + timeout
    while not any(r["type"] == "record_stop" for r in _records(store)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no record_stop within {timeout:g} s of the stop gesture")
        time.sleep(0.1)


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
