"""The durable outbox: telemetry events waiting for the broker's PUBACK, in SQLite.

Every record the chain seals becomes an event here, in sequence order, and stays
until the broker has acknowledged it: so events survive broker outages, agent
restarts and reboots, and are delivered at least once and in order.

Durability without a second fsync per record: the database runs in WAL mode with
`synchronous=NORMAL` (a crash of the process loses nothing; a power cut may lose
the last commits), and at every start the outbox catches up from the chain
itself, which is fsync'd on every append: any record after the last one the
outbox holds is enqueued again. The chain is the truth; the outbox is its queue.

Bounded: at `limit` events, adding one drops one. Routine records go first
(`segment_sealed`, `notice_played`, oldest first), then the oldest of any other
type. Nothing is dropped silently: an `outbox_overflow` event, in the queue where
the first dropped event stood, counts what was dropped by type and the range of
chain sequences, which the device's chain still holds. See docs/telemetry.md.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agent.evidence.chain import parse_line, record_hash, utc_iso

log = logging.getLogger(__name__)

ROUTINE = frozenset({"segment_sealed", "notice_played"})  # dropped first when full
OVERFLOW = "outbox_overflow"
_TIER_ROUTINE, _TIER_OTHER, _TIER_OVERFLOW = 0, 1, 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- delivery order; never reused
    tier INTEGER NOT NULL,                 -- what is dropped first when full
    seq INTEGER,                           -- the chain record's, NULL for overflow
    type TEXT NOT NULL,
    body BLOB NOT NULL                     -- the JSON published
);
CREATE INDEX IF NOT EXISTS events_by_tier ON events (tier, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def event_id(device: str, seq: int, hash_: str) -> str:
    """Unique and stable across restarts: the same record always gets the same id, and a
    re-provisioned device whose chain starts again at 1 does not repeat an old one."""
    return f"{device}:{seq}:{hash_[:16]}"


def record_event(body: dict[str, Any], hash_: str) -> dict[str, Any]:
    """The event for a sealed chain record; `hash` and `prev` let the broker side follow
    the chain without the device (an outside witness of how far it had grown)."""
    return {
        "id": event_id(body["device"], body["seq"], hash_),
        "device": body["device"],
        "officer": body["officer"],
        "seq": body["seq"],
        "type": body["type"],
        "wall": body["wall"],
        "hash": hash_,
        "prev": body["prev"],
        "payload": body["payload"],
    }


def _encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Outbox:
    """Thread-safe: the chain's listener adds, the publisher takes and removes."""

    def __init__(self, path: Path, device: str, limit: int) -> None:
        self.path = path
        self._device = device
        self._limit = limit
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._count = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        self._taken_upto = 0      # ids up to this were handed to the publisher this run
        marker = self._db.execute("SELECT MAX(id) FROM events WHERE tier = ?",
                                  (_TIER_OVERFLOW,)).fetchone()[0]
        self._open_marker: int | None = marker  # an overflow event not yet handed out

    def __len__(self) -> int:
        with self._lock:
            return self._count

    @property
    def last_seq(self) -> int | None:
        """The last chain sequence enqueued; None for a new outbox."""
        with self._lock:
            return self._meta("last_seq")

    def catch_up(self, lines_after: Callable[[int], Iterable[bytes]], head_seq: int) -> int:
        """Enqueue the chain's records after the last one enqueued; returns how many.
        `lines_after(n)` gives the journal's lines after line n (seq n in an intact chain),
        so that only those are read.

        A new outbox starts at the chain's head: history from before telemetry was on
        is not sent (the dock has it).
        """
        last = self.last_seq
        if last is None or head_seq < last:
            if last is not None:
                log.warning("chain head %d is behind the outbox's %d: new chain, "
                            "starting over from its head", head_seq, last)
            with self._lock:
                self._set_meta("last_seq", head_seq)
            return 0
        if head_seq == last:
            return 0
        added = 0
        for line in lines_after(last):
            try:
                body_bytes, _, body = parse_line(line.rstrip(b"\n"))
            except ValueError:
                continue  # the verifier reports it; the outbox sends what is whole
            if body["seq"] > last:
                self.add_record(body, record_hash(body_bytes))
                added += 1
        log.info("outbox caught up %d record(s) from the chain", added)
        return added

    def add_record(self, body: dict[str, Any], hash_: str) -> None:
        """The chain listener: one sealed record in, as its event."""
        tier = _TIER_ROUTINE if body["type"] in ROUTINE else _TIER_OTHER
        event = _encode(record_event(body, hash_))
        with self._lock:
            self._db.execute("BEGIN")
            try:
                while self._count >= self._limit and self._drop_one():
                    pass
                self._db.execute("INSERT INTO events (tier, seq, type, body) VALUES (?, ?, ?, ?)",
                                 (tier, body["seq"], body["type"], event))
                self._count += 1
                self._set_meta("last_seq", body["seq"])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def take(self, count: int, after: int) -> list[tuple[int, bytes]]:
        """Up to `count` events with ids after `after`, oldest first: (id, JSON bytes)."""
        with self._lock:
            rows = self._db.execute("SELECT id, body FROM events WHERE id > ? ORDER BY id "
                                    "LIMIT ?", (after, count)).fetchall()
            if rows:
                self._taken_upto = max(self._taken_upto, rows[-1][0])
                if self._open_marker is not None and self._open_marker <= self._taken_upto:
                    self._open_marker = None
            return rows

    def remove(self, ids: list[int]) -> None:
        """Acknowledged by the broker: gone for good."""
        with self._lock:
            self._db.execute("BEGIN")
            cursor = self._db.executemany("DELETE FROM events WHERE id = ?",
                                          [(i,) for i in ids])
            self._db.execute("COMMIT")
            self._count -= cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- under the lock, in a transaction ----------------------------------------------------

    def _meta(self, key: str) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
                         "DO UPDATE SET value = excluded.value", (key, value))

    def _drop_one(self) -> bool:
        """Drop the oldest event of the lowest tier not yet handed to the publisher, and
        count it in the open overflow event (made in the dropped event's place); False when
        there is nothing that may be dropped."""
        for tier in (_TIER_ROUTINE, _TIER_OTHER):
            victim = self._db.execute(
                "SELECT id, seq, type FROM events WHERE tier = ? AND id > ? ORDER BY id LIMIT 1",
                (tier, self._taken_upto)).fetchone()
            if victim is not None:
                break
        else:
            return False  # all of it is in flight: the queue grows by one
        victim_id, seq, type_ = victim
        self._db.execute("DELETE FROM events WHERE id = ?", (victim_id,))
        self._count -= 1
        if self._open_marker is None:
            number = (self._meta("overflows") or 0) + 1
            self._set_meta("overflows", number)
            marker = {"id": f"{self._device}:overflow:{number}", "device": self._device,
                      "seq": None, "type": OVERFLOW, "wall": utc_iso(time.time_ns()),
                      "payload": {"dropped": 0, "types": {}, "first_seq": seq, "last_seq": seq}}
            self._db.execute("INSERT INTO events (id, tier, seq, type, body) "
                             "VALUES (?, ?, NULL, ?, ?)",
                             (victim_id, _TIER_OVERFLOW, OVERFLOW, _encode(marker)))
            self._count += 1
            self._open_marker = victim_id
            log.warning("outbox full (%d events): dropping the oldest routine events first, "
                        "counted in %s", self._limit, marker["id"])
        else:
            marker = json.loads(self._db.execute("SELECT body FROM events WHERE id = ?",
                                                 (self._open_marker,)).fetchone()[0])
        payload = marker["payload"]
        payload["dropped"] += 1
        payload["types"][type_] = payload["types"].get(type_, 0) + 1
        payload["first_seq"] = min(payload["first_seq"], seq)
        payload["last_seq"] = max(payload["last_seq"], seq)
        self._db.execute("UPDATE events SET body = ? WHERE id = ?",
                         (_encode(marker), self._open_marker))
        return True
