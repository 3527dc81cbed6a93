"""The dock's own account of what it archived: `archived.jsonl` in the evidence folder.

One line per sealed file read back from the archive (seq, file, key, version id, size,
SHA-256, retention), appended and synced before the next stage: a dock killed between the archive
and custody knows what it archived without asking the store. The store stays the truth
(a later pull still reads every object back); this is the dock's queue of where each
item stands. A line is whole or torn by a power cut; a torn line is never read, and the
next append starts on a line of its own. See docs/docking.md, "The evidence folder".
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from agent.dock.direct_file import open_own
from agent.durable import fsync_dir, write_all

JOURNAL = "archived.jsonl"
_FIELDS = ("seq", "file", "key", "version_id", "size", "sha256", "retain_until")
_lock = threading.Lock()  # the archive's worker threads append one line each


def append(folder: Path, entry: dict[str, Any]) -> None:
    """One archived file, on disk before it returns (O_NOFOLLOW, a regular file of one
    link: the folder's rule for every file the dock writes)."""
    line = json.dumps({k: entry[k] for k in _FIELDS}, sort_keys=True).encode() + b"\n"
    path = folder / JOURNAL
    with _lock:
        new = not path.exists()
        fd = open_own(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # after a torn line: that one stays apart, unread
            write_all(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            fsync_dir(folder)


def read(folder: Path) -> tuple[dict[int, dict[str, Any]], int]:
    """The last entry for each seq, and how many lines were not whole entries (a torn line
    from a power cut, or damage). Absent journal: nothing archived by this dock yet."""
    entries: dict[int, dict[str, Any]] = {}
    bad = 0
    try:
        fd = open_own(folder / JOURNAL, os.O_RDONLY)
    except FileNotFoundError:
        return entries, 0
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    for line in data.splitlines(keepends=True):
        try:
            entry = json.loads(line) if line.endswith(b"\n") else None
        except (ValueError, RecursionError):
            entry = None
        if isinstance(entry, dict) and type(entry.get("seq")) is int and \
                all(k in entry for k in _FIELDS):
            entries[entry["seq"]] = entry
        elif line.strip():
            bad += 1
    return entries, bad
