"""The chain's index: what the daemon needs to know about its whole history, without reading it.

`chain.jsonl` grows for the device's whole life (purges delete files, never records),
so nothing the daemon does at start, on a timer or per request may read all of it.
This index, SQLite beside the chain (`chain-index.sqlite`), holds each line's byte
offset and the state derived from the records so far: the sealed files with their
custody and purges, the custody report ids, the officer, the recordings not yet
stopped, the unexplained interruptions and the key rotations. It reads each line
of the chain once, as it is appended (`catch_up`), in one transaction per call.

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
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from agent.evidence.chain import SEALED_FILE_TYPES, record_hash, split_line, whole_lines
from agent.evidence.verify import explained_interruption

log = logging.getLogger(__name__)

INDEX_NAME = "chain-index.sqlite"
VERSION = 1  # of the schema and of what is derived; another version is rebuilt

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value);
CREATE TABLE lines (line INTEGER PRIMARY KEY, offset INTEGER NOT NULL);
CREATE TABLE files (
    seq INTEGER PRIMARY KEY, line INTEGER NOT NULL, file TEXT NOT NULL,
    sha256 TEXT NOT NULL, size INTEGER NOT NULL, wall TEXT NOT NULL,
    custody INTEGER,                        -- seq of the first custody record holding it
    purged INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX files_outstanding ON files (seq) WHERE custody IS NULL AND purged = 0;
CREATE INDEX files_purgeable ON files (seq) WHERE custody IS NOT NULL AND purged = 0;
CREATE TABLE reports (report_id TEXT PRIMARY KEY);
CREATE TABLE open_recordings (recording INTEGER NOT NULL, line INTEGER NOT NULL,
                              PRIMARY KEY (recording, line));
CREATE TABLE unexplained (seq INTEGER PRIMARY KEY);
CREATE TABLE rotations (line INTEGER PRIMARY KEY);
"""
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

    @classmethod
    def open(cls, chain: Path, path: Path | None = None) -> ChainIndex:
        """The index of `chain` (at `path`, by default beside it), trusted only if it agrees
        with the chain; else rebuilt. Then caught up with what the chain added since."""
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
        index.catch_up()
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
            body_bytes, _ = split_line(line.rstrip(b"\n"))
            seq = json.loads(body_bytes)["seq"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return f"expects record {meta['last_seq']} on line {lines}, which is not a record"
        if (seq, record_hash(body_bytes)) != (meta["last_seq"], meta["last_hash"]):
            return (f"expects record {meta['last_seq']} hash {meta['last_hash'][:16]}… on "
                    f"line {lines}, the chain holds record {seq} hash "
                    f"{record_hash(body_bytes)[:16]}… (another or an edited chain)")
        return None

    # --- reading the chain once ------------------------------------------------------------

    def catch_up(self) -> int:
        """Take the whole lines the chain added since the last call; returns how many."""
        with self.lock:
            end = self._meta["end"]
            if not self.chain.exists() or self.chain.stat().st_size == end:
                return 0
            taken = 0
            self._db.execute("BEGIN")
            try:
                for offset, line in whole_lines(self.chain, end):
                    self._take(offset, line)
                    taken += 1
                self._db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                                     [(v, k) for k, v in self._meta.items()])
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._db.execute("ROLLBACK")
                self._meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
                if not isinstance(exc, sqlite3.OperationalError):
                    raise
                # A full disk (the chain has its reserve, the index none): what was indexed
                # still answers, and the next call reads the rest. A purge, which frees the
                # disk, must not wait for the index.
                log.warning("chain index not caught up (%s); %d byte(s) of the chain wait",
                            exc, self.chain.stat().st_size - end)
                return 0
            return taken

    def _take(self, offset: int, line: bytes) -> None:
        meta = self._meta
        number = meta["lines"] + 1
        meta["lines"], meta["end"] = number, offset + len(line)
        self._db.execute("INSERT INTO lines (line, offset) VALUES (?, ?)", (number, offset))
        try:
            body_bytes, _ = split_line(line.rstrip(b"\n"))
            body = json.loads(body_bytes)
            seq = body["seq"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            meta["last_hash"] = None  # not a whole record: the verifier reports it
            return
        meta["last_seq"], meta["last_hash"] = seq, record_hash(body_bytes)
        try:
            self._derive(number, seq, body["type"], body["payload"], body)
        except (KeyError, TypeError, AttributeError):
            log.warning("chain line %d: record %s is not of the shape its type has; the "
                        "verifier reports it", number, seq)

    def _derive(self, line: int, seq: int, kind: str, payload: dict[str, Any],
                body: dict[str, Any]) -> None:
        """What one record changes; the one reading of the chain the daemon's state rests on."""
        db, meta = self._db, self._meta
        if kind in SEALED_FILE_TYPES:
            db.execute("INSERT OR REPLACE INTO files (seq, line, file, sha256, size, wall) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (seq, line, payload["file"],
                                                     payload["sha256"], payload["size"],
                                                     body["wall"]))
        if kind == "custody":
            db.execute("INSERT OR IGNORE INTO reports (report_id) VALUES (?)",
                       (payload["report_id"],))
            meta["custody_head"] = max(meta["custody_head"], payload["head"]["seq"])
            db.executemany("UPDATE files SET custody = ? WHERE seq = ? AND custody IS NULL",
                           [(seq, held["seq"]) for held in payload["segments"]])
        elif kind == "purge":
            db.executemany("UPDATE files SET purged = 1 WHERE seq = ?",
                           [(item["seq"],) for item in payload["files"]])
        elif kind == "officer_assigned":
            meta["officer"], meta["officer_seq"] = payload["officer"], seq
        elif kind == "record_start":
            db.execute("INSERT INTO open_recordings VALUES (?, ?)", (seq, line))
        elif kind == "segment_sealed":
            db.execute("INSERT INTO open_recordings SELECT recording, ? FROM open_recordings "
                       "WHERE recording = ? LIMIT 1", (line, payload["recording"]))
        elif kind == "record_stop":
            db.execute("DELETE FROM open_recordings WHERE recording = ?",
                       (payload["recording"],))
        elif kind == "interruption":
            db.execute("INSERT OR IGNORE INTO unexplained VALUES (?)", (seq,))
        elif kind == "key_rotation":
            db.execute("INSERT INTO rotations VALUES (?)", (line,))
        explained = explained_interruption(body)
        if explained is not None:
            db.execute("DELETE FROM unexplained WHERE seq = ?", (explained,))

    # --- what it knows -------------------------------------------------------------------------

    def meta(self, key: str) -> Any:
        with self.lock:
            return self._meta[key]

    def sealed_file(self, seq: int) -> tuple[int, str, str, int, str] | None:
        """(seq, file, sha256, size, wall) of the file record `seq` seals, if it seals one."""
        return self._one("SELECT seq, file, sha256, size, wall FROM files WHERE seq = ?", seq)

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

    def purgeable(self) -> list[tuple[int, str, str, int, str]]:
        """The files in custody and not yet purged, oldest first."""
        return self._all("SELECT seq, file, sha256, size, wall FROM files WHERE custody IS "
                         "NOT NULL AND purged = 0 ORDER BY seq")

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
                found.append(json.loads(split_line(line)[0]))
            except (ValueError, UnicodeDecodeError):
                continue
        return found

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
