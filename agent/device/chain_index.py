"""The chain's index: what the daemon needs to know about its whole history, without reading it.

`chain.jsonl` grows for the device's whole life (purges delete files, never records),
so nothing the daemon does at start, on a timer or per request may read all of it.
This index, SQLite beside the chain (`chain-index.sqlite`), holds each line's byte
offset and the state derived from the records so far: the sealed files with their
recording, custody and purges, the recordings marked important, the custody report
ids, the officer, the recordings not yet stopped, the unexplained interruptions and the
key rotations. It reads each line of the chain once, as it is appended (`catch_up`), in
one transaction per call.

The chain stays the only truth. The index records the offset, seq and hash of the
last record it has seen; at start it is trusted only if the chain holds that very
record there, and otherwise it is deleted and rebuilt by replaying the chain (an
index from another store, one edited, or one pointing past a truncation). It is
not a security boundary: whoever can write it can write the chain, whose signatures
are what a verifier checks; and what cannot be undone (a purge) is checked against
the signed records themselves before it is done (`Ledger.custody_confirmed`).
See docs/chain-format.md, "The index".
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from agent.evidence.chain import SEALED_FILE_TYPES, parse_line, record_hash, split_line, whole_lines
from agent.evidence.retention import MARKED, recording_of
from agent.evidence.verify import explained_interruption

log = logging.getLogger(__name__)

INDEX_NAME = "chain-index.sqlite"
VERSION = 2  # of the schema and of what is derived; another version is rebuilt

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value);
CREATE TABLE lines (line INTEGER PRIMARY KEY, offset INTEGER NOT NULL);
CREATE TABLE files (
    seq INTEGER PRIMARY KEY, line INTEGER NOT NULL, file TEXT NOT NULL,
    sha256 TEXT NOT NULL, size INTEGER NOT NULL, wall TEXT NOT NULL,
    recording INTEGER,                      -- the recording it belongs to, if it names one
    custody INTEGER,                        -- seq of the first custody record holding it
    marked_custody INTEGER,                 -- ... and of the first holding it as `marked`
    purged INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE marked (recording INTEGER PRIMARY KEY);
CREATE INDEX files_outstanding ON files (seq) WHERE custody IS NULL AND purged = 0;
CREATE INDEX files_purgeable ON files (seq) WHERE custody IS NOT NULL AND purged = 0;
CREATE TABLE reports (report_id TEXT PRIMARY KEY);
CREATE TABLE open_recordings (recording INTEGER NOT NULL, line INTEGER NOT NULL,
                              PRIMARY KEY (recording, line));
CREATE TABLE unexplained (seq INTEGER PRIMARY KEY);
CREATE TABLE rotations (line INTEGER PRIMARY KEY);
"""
BATCH_LINES = 20_000  # committed together
# The end of every canonical body: its seq and type (docs/chain-format.md, the line format).
_TAIL = re.compile(rb',"seq":([0-9]+),"type":"([a-z_]+)","wall":"[^"]*"\}$')
# The record types that change what the index derives; the others are only counted.
_DERIVED = frozenset({*SEALED_FILE_TYPES, "custody", "purge", "officer_assigned",
                      "record_start", "record_stop", "interruption", "key_rotation", "mark"})
_FLUSHING = _DERIVED - {*SEALED_FILE_TYPES, "record_start"}
_INSERT_FILE = ("INSERT OR REPLACE INTO files (seq, line, file, sha256, size, wall, recording) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)")
_INSERT_OPEN = "INSERT OR IGNORE INTO open_recordings VALUES (?, ?)"
# What is derived from the records, with its value before the first one.
_START = {"version": VERSION, "end": 0, "lines": 0, "last_seq": 0, "last_hash": None,
          "custody_head": 0, "officer": None, "officer_seq": 0}


class ChainIndex:
    """Thread-safe (`lock`); `open` is the way in: it checks the index against the chain."""

    def __init__(self, chain: Path, db: sqlite3.Connection) -> None:
        self.chain = chain
        self.lock = threading.RLock()
        self._db = db
        self._meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self._open = _open_recordings(db)  # recordings not yet stopped
        self._pending: dict[str, list[tuple[Any, ...]]] = {_INSERT_FILE: [], _INSERT_OPEN: []}

    @classmethod
    def open(cls, chain: Path, path: Path | None = None,
             progress: Callable[[int, int], None] | None = None) -> ChainIndex:
        """The index of `chain` (at `path`, by default beside it), trusted only if it agrees
        with the chain; else rebuilt. Then caught up with what the chain added since
        (`progress` as for `catch_up`)."""
        path = path or chain.with_name(INDEX_NAME)
        index, why = None, "missing"
        if path.exists():
            try:
                index = cls(chain, _connect(path))
                why = index._disagreement()
            except sqlite3.DatabaseError as exc:
                why = f"unreadable ({exc})"
        if why:
            if index is not None:
                index.close()
            if why != "missing":
                log.warning("chain index %s %s: rebuilt from the chain", path, why)
            elif chain.exists() and chain.stat().st_size:
                log.info("chain index %s missing: built from the chain", path)
            for stale in (path, path.with_name(path.name + "-wal"),
                          path.with_name(path.name + "-shm")):
                stale.unlink(missing_ok=True)
            db = _connect(path)
            db.executescript(_SCHEMA)
            db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", _START.items())
            index = cls(chain, db)
        assert index is not None
        index.catch_up(progress)
        return index

    def close(self) -> None:
        with self.lock:
            self._db.close()

    def _disagreement(self) -> str | None:
        """Why this index cannot be trusted for this chain, or None: it must be of this
        version, and the chain must hold, where the index says it saw its last record, that
        very record (seq and hash), ending exactly where the index stopped reading."""
        meta = self._meta
        if meta.get("version") != VERSION:
            return f"is of version {meta.get('version')}, not {VERSION}"
        end, lines = meta["end"], meta["lines"]
        size = self.chain.stat().st_size if self.chain.exists() else 0
        if end > size:
            return f"has read {end} bytes of a {size}-byte chain (truncated or replaced)"
        if lines == 0:
            return None if end == 0 else "counts no line before its offset"
        start = self.offset(lines)
        if start is None or start >= end:
            return "has no offset for its last line"
        with self.chain.open("rb") as f:
            if start:
                f.seek(start - 1)
                before = f.read(1)
                if before != b"\n":
                    return f"says line {lines} starts at byte {start}, inside a line"
            else:
                f.seek(0)
            line = f.read(end - start)
        if not line.endswith(b"\n") or b"\n" in line[:-1]:
            return f"says line {lines} ends at byte {end}, which the chain does not"
        if meta["last_hash"] is None:
            return None  # its last line was not a record: nothing more to compare
        try:
            body_bytes, _, body = parse_line(line.rstrip(b"\n"))
            seq = body["seq"]
        except ValueError:
            return f"expects record {meta['last_seq']} on line {lines}, which is not a record"
        if (seq, record_hash(body_bytes)) != (meta["last_seq"], meta["last_hash"]):
            return (f"expects record {meta['last_seq']} hash {meta['last_hash'][:16]}… on "
                    f"line {lines}, the chain holds record {seq} hash "
                    f"{record_hash(body_bytes)[:16]}… (another or an edited chain)")
        return None

    # --- reading the chain once ------------------------------------------------------------

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Take the whole lines the chain added since the last call; returns how many.

        Committed every BATCH_LINES lines, so that a first start that builds the index of a
        long chain and is stopped (systemd's start timeout) goes on from there next time;
        `progress(bytes read, chain size)` is called after each batch."""
        with self.lock:
            taken = 0
            while True:
                end = self._meta["end"]
                size = self.chain.stat().st_size if self.chain.exists() else 0
                if size == end:
                    return taken
                try:
                    batch = self._batch(end)
                except sqlite3.OperationalError as exc:
                    # A full disk (the chain has its reserve, the index none): what was
                    # indexed still answers, and the next call reads the rest. A purge,
                    # which frees the disk, must not wait for the index.
                    log.warning("chain index not caught up (%s); %d byte(s) of the chain "
                                "wait", exc, size - end)
                    return taken
                taken += batch
                if batch < BATCH_LINES:
                    return taken
                if progress is not None:
                    progress(self._meta["end"], size)

    def _batch(self, end: int) -> int:
        """One transaction: up to BATCH_LINES whole lines from byte `end` on."""
        self._db.execute("BEGIN")
        try:
            offsets: list[tuple[int, int]] = []
            last: bytes | None = None
            for offset, line in whole_lines(self.chain, end):
                number = self._meta["lines"] + 1
                self._meta["lines"], self._meta["end"] = number, offset + len(line)
                offsets.append((number, offset))
                last = self._take(number, line)
                if len(offsets) == BATCH_LINES:
                    break
            self._flush()
            self._db.executemany("INSERT INTO lines (line, offset) VALUES (?, ?)", offsets)
            self._meta["last_hash"] = None if last is None else record_hash(last)
            self._db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                                 [(v, k) for k, v in self._meta.items()])
            self._db.execute("COMMIT")
            return len(offsets)
        except BaseException:
            self._db.execute("ROLLBACK")
            self._pending = {sql: [] for sql in self._pending}
            self._meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            self._open = _open_recordings(self._db)
            raise

    def _take(self, line: int, text: bytes) -> bytes | None:
        """Read one line; returns its signed bytes, or None when it is not a whole record.
        Only records that change the derived state are parsed as JSON: the others need no
        more than their seq, which the canonical form puts at the line's end."""
        try:
            body_bytes, _ = split_line(text.rstrip(b"\n"))
        except ValueError:
            return None  # not a whole record: the verifier reports it
        tail = _TAIL.search(body_bytes)
        if tail is not None and tail.group(2).decode() not in _DERIVED:
            self._meta["last_seq"] = int(tail.group(1))
            return body_bytes
        try:
            body = json.loads(body_bytes)
            seq = body["seq"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
            return None  # not a record (deep nesting included): the verifier reports it
        self._meta["last_seq"] = seq
        try:
            self._derive(line, seq, body["type"], body["payload"], body)
        except (KeyError, TypeError, AttributeError):
            log.warning("chain line %d: record %s is not of the shape its type has; the "
                        "verifier reports it", line, seq)
        return body_bytes

    def _derive(self, line: int, seq: int, kind: str, payload: dict[str, Any],
                body: dict[str, Any]) -> None:
        """What one record changes; the one reading of the chain the daemon's state rests on.
        The many inserts (sealed files, lines of open recordings) wait in `_pending` for one
        executemany; anything else flushes them first, so that it sees them."""
        meta = self._meta
        if kind in SEALED_FILE_TYPES:
            self._pending[_INSERT_FILE].append((seq, line, payload["file"], payload["sha256"],
                                                payload["size"], body["wall"],
                                                recording_of(payload)))
        if kind == "segment_sealed" and payload["recording"] in self._open:
            self._pending[_INSERT_OPEN].append((payload["recording"], line))
        if kind in _FLUSHING:
            self._flush()
        db = self._db
        if kind == "custody":
            db.execute("INSERT OR IGNORE INTO reports (report_id) VALUES (?)",
                       (payload["report_id"],))
            meta["custody_head"] = max(meta["custody_head"], payload["head"]["seq"])
            db.executemany("UPDATE files SET custody = ? WHERE seq = ? AND custody IS NULL",
                           [(seq, held["seq"]) for held in payload["segments"]])
            db.executemany("UPDATE files SET marked_custody = ? WHERE seq = ? AND "
                           "marked_custody IS NULL", [(seq, held["seq"]) for held in
                                                      payload["segments"]
                                                      if held.get("retention") == MARKED])
        elif kind == "purge":
            db.executemany("UPDATE files SET purged = 1 WHERE seq = ?",
                           [(item["seq"],) for item in payload["files"]])
        elif kind == "officer_assigned":
            meta["officer"], meta["officer_seq"] = payload["officer"], seq
        elif kind == "record_start":
            self._pending[_INSERT_OPEN].append((seq, line))
            self._open.add(seq)
        elif kind == "record_stop":
            db.execute("DELETE FROM open_recordings WHERE recording = ?",
                       (payload["recording"],))
            self._open.discard(payload["recording"])
        elif kind == "interruption":
            db.execute("INSERT OR IGNORE INTO unexplained VALUES (?)", (seq,))
        elif kind == "mark":
            db.execute("INSERT OR IGNORE INTO marked VALUES (?)", (payload["recording"],))
        elif kind == "key_rotation":
            db.execute("INSERT INTO rotations VALUES (?)", (line,))
        explained = explained_interruption(body)
        if explained is not None:
            db.execute("DELETE FROM unexplained WHERE seq = ?", (explained,))

    def _flush(self) -> None:
        for sql, rows in self._pending.items():
            if rows:
                self._db.executemany(sql, rows)
                rows.clear()

    # --- what it knows -------------------------------------------------------------------------

    def meta(self, key: str) -> Any:
        with self.lock:
            return self._meta[key]

    def sealed_file(self, seq: int) -> tuple[int, str, str, int, str, int | None] | None:
        """(seq, file, sha256, size, wall, recording) of the file record `seq` seals, if it
        seals one."""
        return self._one("SELECT seq, file, sha256, size, wall, recording FROM files "
                         "WHERE seq = ?", seq)

    def marked(self) -> set[int]:
        """The recordings a `mark` record marks."""
        return {row[0] for row in self._all("SELECT recording FROM marked")}

    def custody_of(self, seq: int) -> int | None:
        """The seq of the first custody record that holds file `seq`."""
        row = self._one("SELECT custody FROM files WHERE seq = ?", seq)
        return None if row is None else row[0]

    def purged(self, seq: int) -> bool:
        return self._one("SELECT 1 FROM files WHERE seq = ? AND purged", seq) is not None

    def report_used(self, report_id: str) -> bool:
        return self._one("SELECT 1 FROM reports WHERE report_id = ?", report_id) is not None

    def outstanding(self, limit: int = -1) -> list[tuple[int, str, str, int, str]]:
        """The files neither in custody nor purged, oldest first (at most `limit`)."""
        return self._all("SELECT seq, file, sha256, size, wall FROM files WHERE custody IS "
                         "NULL AND purged = 0 ORDER BY seq LIMIT ?", limit)

    def outstanding_count(self) -> int:
        row = self._one("SELECT COUNT(*) FROM files WHERE custody IS NULL AND purged = 0")
        assert row is not None
        return int(row[0])

    def purgeable(self) -> list[tuple[int, str, str, int, str, int | None, int, int | None]]:
        """The files in custody and not yet purged, oldest first: (seq, file, sha256, size,
        wall, recording, custody, marked_custody)."""
        return self._all("SELECT seq, file, sha256, size, wall, recording, custody, "
                         "marked_custody FROM files WHERE custody IS NOT NULL AND purged = 0 "
                         "ORDER BY seq")

    def _one(self, sql: str, *args: Any) -> Any:
        with self.lock:
            return self._db.execute(sql, args).fetchone()

    def _all(self, sql: str, *args: Any) -> list[Any]:
        with self.lock:
            return self._db.execute(sql, args).fetchall()

    def offset(self, line: int) -> int | None:
        """Where line `line` (1-based; seq in an intact chain) starts."""
        with self.lock:
            row = self._db.execute("SELECT offset FROM lines WHERE line = ?", (line,)).fetchone()
        return None if row is None else row[0]

    def span_from(self, line: int) -> tuple[int, int]:
        """[start, end) of the chain's bytes from line `line` to the last whole line."""
        with self.lock:
            self.catch_up()
            end = self._meta["end"]
            start = self.offset(line) if line <= self._meta["lines"] else end
            return (end if start is None else start), end

    def read_lines(self, lines: Iterable[int]) -> Iterator[tuple[int, bytes]]:
        """(line number, bytes without the newline) of each line asked for, seeking to each."""
        with self.chain.open("rb") as f:
            for number in sorted(set(lines)):
                offset = self.offset(number)
                if offset is not None:
                    f.seek(offset)
                    yield number, f.readline().rstrip(b"\n")

    def lines_after(self, line: int) -> Iterator[bytes]:
        """The whole lines after line `line`, streamed from its end."""
        start, end = self.span_from(line + 1)
        for offset, text in whole_lines(self.chain, start):
            if offset >= end:
                return
            yield text

    def tail(self, count: int) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
        """(the last `count` lines, the one line before them if any), numbered: what the
        self-check verifies, and what it links to."""
        with self.lock:
            self.catch_up()
            last = self._meta["lines"]
        first = max(1, last - count + 1)
        lines = list(self.read_lines(range(max(1, first - 1), last + 1)))
        return ([line for line in lines if line[0] >= first],
                [line for line in lines if line[0] < first])

    def bodies(self, lines: Iterable[int]) -> list[dict[str, Any]]:
        """The bodies of the whole records on these lines, in chain order."""
        found = []
        for _, line in self.read_lines(lines):
            try:
                found.append(parse_line(line)[2])
            except ValueError:
                continue
        return found

    def key_records(self) -> list[dict[str, Any]]:
        """The first record and every key rotation: which keys the chain was signed with."""
        return self.bodies({1, *(line for (line,) in self._all("SELECT line FROM rotations"))})

    def start_records(self, sealed: Path) -> list[dict[str, Any]]:
        """The records recovery reads at start: every record of a recording not yet stopped,
        and the record of each file now in `sealed/` (so that a file no record names, an
        orphan, stands out); never the whole chain."""
        seqs = [int(name[:8]) for name in _names(sealed) if name[:8].isdigit()]
        with self.lock:
            lines = {line for (line,) in self._db.execute(
                "SELECT line FROM open_recordings")}
            for start in range(0, len(seqs), 500):
                batch = seqs[start:start + 500]
                lines.update(line for (line,) in self._db.execute(
                    f"SELECT line FROM files WHERE seq IN ({','.join('?' * len(batch))})",
                    batch))
        return self.bodies(lines)

    def unexplained(self) -> list[int]:
        """Seqs of the interruptions that no voice note with speech explains, oldest first."""
        return [seq for (seq,) in self._all("SELECT seq FROM unexplained ORDER BY seq")]

    def rotation_lines(self, before: int) -> list[tuple[int, bytes]]:
        """The key_rotation lines before line `before`: whose keys sign what follows them."""
        return list(self.read_lines(line for (line,) in self._all(
            "SELECT line FROM rotations WHERE line < ?", before)))


def _open_recordings(db: sqlite3.Connection) -> set[int]:
    return {recording for (recording,) in db.execute(
        "SELECT DISTINCT recording FROM open_recordings")}


def _connect(path: Path) -> sqlite3.Connection:
    """WAL with synchronous=NORMAL: a power cut may lose the last commits, never corrupt;
    what is lost is read again from the chain, which is fsync'd on every append."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _names(folder: Path) -> list[str]:
    try:
        return [entry.name for entry in folder.iterdir()]
    except FileNotFoundError:
        return []
