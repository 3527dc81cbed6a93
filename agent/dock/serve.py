"""`bodycam dock serve`: the docking station as a service, polling its bays.

Each poll, every bay not being pulled is tried, configured or announced on the dock's
links (agent.dock.discovery): a bay with no device answering
is "absent" (not an error: a device is docked when it is docked), a device that answers is
pulled with the one-device `pull` (archive and custody included), at most `max_concurrent`
at once and never the same device twice at once, whichever bay it sits in. The pull is
incremental and resumes partial files, so a restart, or a device moved to another bay,
re-does nothing already done; the service only keeps, durably, each device's last outcome
for `bodycam dock status`. See docs/docking.md, "Dock service".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from agent.dock.archive import (
    DEFAULT_MARKED_RETENTION,
    DEFAULT_RETENTION,
    Archive,
    ArchiveError,
)
from agent.dock.board import Board
from agent.dock.discovery import Discovery
from agent.dock.progress import Progress
from agent.dock.pull import DockError, DockLink, PullResult, device_identity, open_session, pull
from agent.dock.service_config import ServiceConfig
from agent.dock.status_mqtt import DockStatus
from agent.durable import write_file
from agent.sdnotify import Notifier

log = logging.getLogger(__name__)
_ABSENT = (aiohttp.ClientConnectionError, asyncio.TimeoutError, ConnectionError)
_REACH_S = 5.0  # seconds for a docked device to answer who it is


@dataclass
class State:
    """What `dock status` shows: each bay's last sight and each device's last outcome,
    kept in one small file written whole (agent.durable.write_file)."""

    path: Path
    bays: dict[str, dict[str, Any]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> State:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise DockError(f"dock state {path}: cannot be read ({exc}); move it aside to "
                            "start afresh (the evidence folder is untouched)") from None
        return cls(path, dict(raw.get("bays", {})), dict(raw.get("devices", {})))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_file(self.path, json.dumps({"bays": self.bays, "devices": self.devices},
                                         indent=1, sort_keys=True).encode() + b"\n")

    def see(self, bay: str, status: str, device: str | None = None,
            error: str | None = None, officer: str | None = None) -> None:
        """A bay's state, written only when it changes (not at every poll)."""
        seen = {"status": status, "device": device, "officer": officer, "error": error}
        if {k: self.bays.get(bay, {}).get(k) for k in seen} != seen:
            self.bays[bay] = {**seen, "since": _now()}
            self.save()

    def outcome(self, bay: str, result: PullResult, head_after: Any) -> None:
        """A device's last pull, and counts over all its pulls (not the seqs: the evidence
        folder and the device's chain say which files, this file stays small)."""
        before = self.devices.get(result.device, {})
        archived = result.archived
        self.devices[result.device] = {
            "bay": bay, "at": _now(), "ok": result.ok,
            "pulls": before.get("pulls", 0) + 1,
            "fetched": len(result.fetched), "bytes": result.bytes_fetched,
            "fetched_total": before.get("fetched_total", 0) + len(result.fetched),
            "bytes_total": before.get("bytes_total", 0) + result.bytes_fetched,
            "verified": result.verify.ok,
            "archived": None if archived is None else len(archived.files),
            "custody_seq": result.custody_seq,
            "custody_reports": before.get("custody_reports", 0) +
            (result.custody_seq is not None),
            "purged": len(result.purged), "error": result.problem, "head_after": head_after,
            "folder": str(result.folder)}
        self.save()

    def failure(self, bay: str, device: str, error: str) -> None:
        before = self.devices.get(device, {})
        self.devices[device] = {**before, "bay": bay, "at": _now(), "ok": False,
                                "pulls": before.get("pulls", 0) + 1, "error": error}
        self.save()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Service:
    """The poll loop; `stop()` (SIGTERM) cancels the pulls under way and ends it."""

    def __init__(self, config: ServiceConfig, notifier: Notifier | None = None,
                 discovered: Callable[[], set[str]] = set) -> None:
        self.config = config
        self._notifier = notifier or Notifier({})  # none: outside systemd
        self._discovered = discovered  # bays announced now (agent.dock.discovery)
        self.state = State.load(config.state)
        self._limit = asyncio.Semaphore(config.max_concurrent)
        self._visits: dict[str, asyncio.Task[None]] = {}
        self._pulling: set[str] = set()  # device ids
        self._stop = asyncio.Event()
        self._archive: Archive | None = None
        self.board = Board(self.state.bays, config.state)

    def stop(self) -> None:
        self._notifier.stopping("stopping: the pulls under way are cancelled")
        self._stop.set()

    async def run(self) -> None:
        settings = self.config.archive
        # One client for every pull: its probe of the lock runs once (at the first pull, so
        # a store out of reach at the start is tried again), not once per pull, each leaving
        # a locked object behind. A bad URL or profile stops the start.
        self._archive = None if settings is None else \
            Archive.connect(settings.url, settings.endpoint)
        log.info("dock service: %d bay(s), at most %d pull(s) at once, every %.1f s",
                 len(self.config.bays), self.config.max_concurrent, self.config.poll_s)
        status = self._report()
        board = asyncio.create_task(self.board.run(self._stop), name="board")
        beat = asyncio.create_task(self._watchdog(), name="watchdog")
        self._notifier.ready(f"{len(self.config.bays)} bay(s)")
        try:
            while not self._stop.is_set():
                for bay in self._bays():
                    if bay not in self._visits:
                        task = asyncio.create_task(self._visit(bay), name=bay)
                        self._visits[bay] = task
                        task.add_done_callback(self._visited)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.config.poll_s)
        finally:
            visits = list(self._visits.values())
            for task in visits:
                task.cancel()
            await asyncio.gather(*visits, return_exceptions=True)
            self._stop.set()
            await board  # the last view published, the pulls cancelled
            beat.cancel()
            if status is not None:
                await asyncio.to_thread(status.close)
            log.info("dock service stopped; partial files resume at the next start")

    def _report(self) -> DockStatus | None:
        """The board's listeners: systemd's status line and, with [mqtt], the MQTT status,
        connecting in the background."""
        self.board.listeners.append(self._tell_systemd)
        if self.config.mqtt is None:
            return None
        status = DockStatus(self.config.mqtt)
        self.board.listeners.append(status.show)
        status.start()
        return status

    async def _watchdog(self) -> None:
        """WATCHDOG=1 while the event loop turns (the unit's WatchdogSec): a loop stuck in a
        call that blocks it pulls nothing and is restarted."""
        if self._notifier.watchdog_s is None:
            return
        while True:
            self._notifier.watchdog()
            await asyncio.sleep(self._notifier.watchdog_s / 3)

    def _tell_systemd(self, view: dict[str, dict[str, Any]]) -> None:
        """The bays in a line, for `systemctl status`."""
        counts: dict[str, int] = {}
        for seen in view.values():
            counts[seen["status"]] = counts.get(seen["status"], 0) + 1
        self._notifier.status(", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
                              + f" of {len(view)} bay(s)")

    def _bays(self) -> list[str]:
        """The configured bays and those announced now; a bay no longer either, once no
        visit of it runs, is marked withdrawn and no longer polled."""
        bays = [*self.config.bays, *sorted(self._discovered() - set(self.config.bays))]
        for bay in set(self.state.bays) - set(bays) - set(self._visits):
            if self.state.bays[bay]["status"] != "withdrawn":
                self.board.clear(bay)
                self.state.see(bay, "withdrawn")
        return bays

    def _visited(self, task: asyncio.Task[None]) -> None:
        self._visits.pop(task.get_name(), None)
        error = None if task.cancelled() else task.exception()
        if error is None:
            return
        # A fault of the dock's own (no pull error is raised this far): said where the
        # supervisor looks, not only in the log; the bay is tried again at the next poll.
        bay, why = task.get_name(), f"{type(error).__name__}: {_line(error)}"
        log.error("bay %s: %s", bay, why, exc_info=error)
        device = self.state.bays.get(bay, {}).get("device")
        if device is not None:
            self.state.failure(bay, device, why)
        self.board.clear(bay)
        self.state.see(bay, "failed", device, why)

    async def _visit(self, bay: str) -> None:
        try:
            identity = await self._identify(bay)
        except aiohttp.ClientSSLError as exc:  # someone answers, not a device of the agency
            self.board.clear(bay)
            self.state.see(bay, "refused", error=_line(exc))
            return
        except _ABSENT:
            self.board.clear(bay)
            self.state.see(bay, "absent")
            return
        except (DockError, aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            self.board.clear(bay)
            self.state.see(bay, "refused", error=_line(exc))
            return
        device = str(identity["device"])
        officer = str(identity["officer"]) if identity.get("officer") else None  # "": no one
        if device in self._pulling:  # the same device answering in another bay
            self.board.clear(bay)
            self.state.see(bay, "busy elsewhere", device, officer=officer)
            return
        last = self.state.devices.get(device, {})
        if last.get("ok") and last.get("head_after") == identity["head"]:
            # Nothing sealed since the last pull's custody: a pull would only seal an
            # empty custody record at every poll.
            self.state.see(bay, "done", device, officer=officer)
            return
        self._pulling.add(device)
        try:
            self.state.see(bay, "waiting", device, officer=officer)
            async with self._limit:
                self.state.see(bay, "pulling", device, officer=officer)
                await self._pull(bay, device, officer)
        finally:
            self._pulling.discard(device)

    async def _identify(self, bay: str, device: str | None = None) -> dict[str, Any]:
        """Who answers in the bay, and its chain head."""
        link = DockLink(self.config.cert, self.config.key, self.config.ca, device)
        context = link.context()
        async with open_session(bay, context, 1) as session:
            return await asyncio.wait_for(device_identity(session, context.check), _REACH_S)

    async def _pull(self, bay: str, device: str, officer: str | None) -> None:
        link = DockLink(self.config.cert, self.config.key, self.config.ca, device)
        settings = self.config.archive
        progress = Progress()
        self.board.pulling(bay, progress)
        try:
            result = await pull(bay, self.config.evidence, link, self.config.operator,
                                connections=self.config.connections, archive=self._archive,
                                retention=timedelta(days=settings.retention_days)
                                if settings else DEFAULT_RETENTION,
                                marked_retention=timedelta(days=settings.marked_retention_days)
                                if settings else DEFAULT_MARKED_RETENTION,
                                max_mbit=self.config.mbit_for(bay), progress=progress)
        except _ABSENT:
            self.board.clear(bay)
            self.state.see(bay, "absent")  # taken out mid-pull: resumed when docked again
            return
        except (DockError, ArchiveError, aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            self.state.failure(bay, device, _line(exc))
            self.state.see(bay, "failed", device, _line(exc), officer)
            return
        head_after = None
        if result.ok:  # the head with this pull's custody (and purge) records on it
            try:
                head = (await self._identify(bay, device))["head"]
            except (*_ABSENT, DockError, aiohttp.ClientError, ssl.SSLError, OSError):
                pass  # pulled again at the next poll, which finds nothing new to fetch
            else:
                head_after = head if _only_its_own(result, head) else None
        self.state.outcome(bay, result, head_after)
        self.state.see(bay, "done" if result.ok else "failed", device, result.problem, officer)
        log.info("%s in %s: %d file(s) fetched, custody %s%s", device, bay, len(result.fetched),
                 result.custody_seq, f"; {result.problem}" if result.problem else "")


def _only_its_own(result: PullResult, head: Any) -> bool:
    """Whether the device sealed nothing after the head the pull verified but the pull's own
    custody record and the purge that custody set off. A file sealed while the pull ran (a
    recording stopped as the device is docked) is after that head too: the device is pulled
    again at the next poll, or it would wait, unarchived, for its head to move again."""
    verified = result.verify.head
    if result.custody_seq is None or verified is None or not isinstance(head, dict):
        return False
    return result.custody_seq == verified["seq"] + 1 and \
        head.get("seq") == result.custody_seq + bool(result.purged)


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def serve(config: ServiceConfig) -> None:
    """Run until SIGTERM or SIGINT."""

    notifier = Notifier()

    async def main() -> None:
        service = Service(config, notifier, discovery.bays if discovery else set)
        loop = asyncio.get_running_loop()
        # A pull holds a worker thread through its archive upload and one per file being
        # settled; asyncio's default pool (cores + 4) made the eighth bay's pull wait for
        # another's upload (docs/performance.md, "The dock service: N devices at once").
        loop.set_default_executor(ThreadPoolExecutor(
            config.max_concurrent * (config.connections + 1) + 4, thread_name_prefix="dock"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop)
        await service.run()

    discovery = Discovery(config.discovery) if config.discovery else None
    if discovery:
        discovery.start()
    try:
        asyncio.run(main())
    finally:
        notifier.close()
        if discovery:
            discovery.close()


def status_view(state: State, progress: dict[str, Any]) -> dict[str, Any]:
    """`bodycam dock status --json`: the state file, each bay with the progress of its pull
    as the service last published it (`progress`, from agent.dock.board.read_progress)."""
    live = progress.get("bays", {})
    return {"bays": {bay: {**seen, **({"progress": live[bay], "progress_at": progress["at"]}
                                      if bay in live else {})}
                     for bay, seen in state.bays.items()},
            "devices": state.devices}


def _progress_text(seen: dict[str, Any]) -> str:
    progress = seen["progress"]
    return (f"; {progress['stage']}: {progress['files_fetched']} of {progress['files_total']} "
            f"file(s), {progress['bytes_fetched'] / 1e6:.1f} of "
            f"{progress['bytes_total'] / 1e6:.1f} MB fetched, pending "
            f"{progress['pending_files']} file(s), {progress['pending_bytes'] / 1e6:.1f} MB "
            f"(at {seen['progress_at']})")


def status_lines(view: dict[str, Any]) -> list[str]:
    """`bodycam dock status`: a line per bay, then a line per device, from `status_view`."""
    lines = [f"bay {bay}: {seen['status']}"
             f"{' ' + seen['device'] if seen.get('device') else ''}"
             f"{' (officer ' + seen['officer'] + ')' if seen.get('officer') else ''}"
             f" since {seen['since']}"
             f"{': ' + seen['error'] if seen.get('error') else ''}"
             f"{_progress_text(seen) if 'progress' in seen else ''}"
             for bay, seen in sorted(view["bays"].items())]
    for device, last in sorted(view["devices"].items()):
        custody = last.get("custody_seq")
        lines.append(
            f"{device}: {'ok' if last.get('ok') else 'NOT DONE'} at {last['at']} in "
            f"{last['bay']}: {last.get('fetched', 0)} file(s) fetched, verified "
            f"{'yes' if last.get('verified') else 'no'}, archived "
            f"{'-' if last.get('archived') is None else last['archived']}, custody "
            f"{'record ' + str(custody) if custody is not None else 'not reported'}, "
            f"purged {last.get('purged', 0)}"
            f"{'; error: ' + last['error'] if last.get('error') else ''}")
    return lines or ["no bay polled yet"]
