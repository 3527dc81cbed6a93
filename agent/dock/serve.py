"""`bodycam dock serve`: the docking station as a service, polling its bays.

Each poll, every configured bay not being pulled is tried: a bay with no device answering
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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from agent.dock.archive import Archive, ArchiveError
from agent.dock.pull import DockError, DockLink, PullResult, device_identity, open_session, pull
from agent.dock.service_config import ServiceConfig
from agent.durable import write_file

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
            error: str | None = None) -> None:
        """A bay's state, written only when it changes (not at every poll)."""
        seen = {"status": status, "device": device, "error": error}
        if {k: self.bays.get(bay, {}).get(k) for k in seen} != seen:
            self.bays[bay] = {**seen, "since": _now()}
            self.save()

    def outcome(self, bay: str, result: PullResult, head_after: Any) -> None:
        before = self.devices.get(result.device, {})
        archived = result.archived
        self.devices[result.device] = {
            "bay": bay, "at": _now(), "ok": result.ok,
            "pulls": before.get("pulls", 0) + 1,
            "fetched": len(result.fetched), "bytes": result.bytes_fetched,
            "fetched_seqs": sorted({*before.get("fetched_seqs", []), *result.fetched}),
            "verified": result.verify.ok,
            "archived": None if archived is None else len(archived.files),
            "custody_seq": result.custody_seq,
            "custody_seqs": [*before.get("custody_seqs", []),
                             *([result.custody_seq] if result.custody_seq is not None else [])],
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

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.state = State.load(config.state)
        self._limit = asyncio.Semaphore(config.max_concurrent)
        self._visits: dict[str, asyncio.Task[None]] = {}
        self._pulling: set[str] = set()  # device ids
        self._stop = asyncio.Event()
        self._archive: Archive | None = None

    def stop(self) -> None:
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
        try:
            while not self._stop.is_set():
                for bay in self.config.bays:
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
            log.info("dock service stopped; partial files resume at the next start")

    def _visited(self, task: asyncio.Task[None]) -> None:
        self._visits.pop(task.get_name(), None)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.error("bay %s: %s", task.get_name(), _line(error))

    async def _visit(self, bay: str) -> None:
        try:
            identity = await self._identify(bay)
        except _ABSENT:
            self.state.see(bay, "absent")
            return
        except (DockError, aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            self.state.see(bay, "refused", error=_line(exc))
            return
        device = str(identity["device"])
        if device in self._pulling:  # the same device answering in another bay
            self.state.see(bay, "busy elsewhere", device)
            return
        last = self.state.devices.get(device, {})
        if last.get("ok") and last.get("head_after") == identity["head"]:
            # Nothing sealed since the last pull's custody: a pull would only seal an
            # empty custody record at every poll.
            self.state.see(bay, "done", device)
            return
        self._pulling.add(device)
        try:
            self.state.see(bay, "waiting", device)
            async with self._limit:
                self.state.see(bay, "pulling", device)
                await self._pull(bay, device)
        finally:
            self._pulling.discard(device)

    async def _identify(self, bay: str, device: str | None = None) -> dict[str, Any]:
        """Who answers in the bay, and its chain head."""
        link = DockLink(self.config.cert, self.config.key, self.config.ca, device)
        context = link.context()
        async with open_session(bay, context, 1) as session:
            return await asyncio.wait_for(device_identity(session, context.check), _REACH_S)

    async def _pull(self, bay: str, device: str) -> None:
        link = DockLink(self.config.cert, self.config.key, self.config.ca, device)
        settings = self.config.archive
        try:
            result = await pull(bay, self.config.evidence, link, self.config.operator,
                                connections=self.config.connections, archive=self._archive,
                                retention=timedelta(days=settings.retention_days if settings
                                                    else 365))
        except _ABSENT:
            self.state.see(bay, "absent")  # taken out mid-pull: resumed when docked again
            return
        except (DockError, ArchiveError, aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            self.state.failure(bay, device, _line(exc))
            self.state.see(bay, "failed", device, _line(exc))
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
        self.state.see(bay, "done" if result.ok else "failed", device, result.problem)
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

    async def main() -> None:
        service = Service(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop)
        await service.run()

    asyncio.run(main())


def status_lines(state: State) -> list[str]:
    """`bodycam dock status`: a line per bay, then a line per device."""
    lines = [f"bay {bay}: {seen['status']}"
             f"{' ' + seen['device'] if seen.get('device') else ''} since {seen['since']}"
             f"{': ' + seen['error'] if seen.get('error') else ''}"
             for bay, seen in sorted(state.bays.items())]
    for device, last in sorted(state.devices.items()):
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
