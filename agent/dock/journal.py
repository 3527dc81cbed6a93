"""The dock's own account of what it archived: `archived.jsonl` in the evidence folder.

Two kinds of line, each appended and synced before the pull goes on:

- a sealed file read back from the archive (seq, file, key, version id, size, SHA-256,
  retention): a dock killed between the archive and custody knows what it archived
  without asking the store (the items view's `archived` stage);
- a chain slice read back (`slice`: its first chain line, key, version id, size,
  SHA-256, retention), written by a pull or read and extended by `renew_slices`: a
  COMPLIANCE retention can only be lengthened, by anyone, so the retain-until read back
  for a version stays a lower bound whatever other docks do, and a later pull reads no
  slice this bound already covers.

The store stays the truth (a later pull reads every file again, and any slice not known
kept long enough); this is the dock's queue of where each item stands and its memory of
the slices. A line is whole or torn by a power cut; a torn line is never read, and the
next append starts on a line of its own. See docs/docking.md, "The evidence folder".
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.dock.direct_file import open_own
from agent.durable import fsync_dir, write_all
from agent.evidence.retention import until_of

JOURNAL = "archived.jsonl"
_FILE = ("seq", "file", "key", "version_id", "size", "sha256", "retain_until")
_SLICE = ("slice", "key", "version_id", "size", "sha256", "retain_until")
_lock = threading.Lock()  # the archive's worker threads append one line each


@dataclass
class Account:
    """What the journal holds: the last entry for each sealed file's seq; the longest
    retain-until read back for each chain slice's (key, version id); and how many lines
    were not whole entries (a torn line from a power cut, or damage)."""

    files: dict[int, dict[str, Any]] = field(default_factory=dict)
    slices: dict[tuple[str, str], datetime] = field(default_factory=dict)
    bad: int = 0


def append(folder: Path, *entries: dict[str, Any]) -> None:
    """Entries (a sealed file's, with `seq`; a chain slice's, with `slice`) in one write,
    on disk before it returns (O_NOFOLLOW, a regular file of one link: the folder's rule
    for every file the dock writes)."""
    data = b"".join(json.dumps({k: e[k] for k in (_FILE if "seq" in e else _SLICE)},
                               sort_keys=True).encode() + b"\n" for e in entries)
    if not data:
        return
    path = folder / JOURNAL
    with _lock:
        new = not path.exists()
        fd = open_own(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # after a torn line: that one stays apart, unread
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            fsync_dir(folder)


def read(folder: Path) -> Account:
    """The journal's entries. Absent journal: nothing archived by this dock yet."""
    account = Account()
    try:
        fd = open_own(folder / JOURNAL, os.O_RDONLY)
    except FileNotFoundError:
        return account
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    for line in data.splitlines(keepends=True):
        entry: Any
        try:
            entry = json.loads(line) if line.endswith(b"\n") else None
        except (ValueError, RecursionError):
            entry = None
        if isinstance(entry, dict) and type(entry.get("seq")) is int and \
                all(k in entry for k in _FILE):
            account.files[entry["seq"]] = entry
        elif (until := _slice_until(entry)) is not None:
            known = (entry["key"], entry["version_id"])
            account.slices[known] = max(until, account.slices.get(known, until))
        elif line.strip():
            account.bad += 1
    return account


def _slice_until(entry: Any) -> datetime | None:
    """A chain slice entry's retain-until, None when `entry` is not a whole one."""
    if not isinstance(entry, dict) or type(entry.get("slice")) is not int or \
            not all(k in entry for k in _SLICE) or \
            not all(isinstance(entry[k], str) for k in ("key", "version_id", "retain_until")):
        return None
    return until_of(entry["retain_until"])
