"""Writes that survive a power cut: every byte out, and renames made durable."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is out; a short write must never drop evidence."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create or replace `path` with `data`, whole, its bytes and its name on disk before it
    returns: what the next start must find even after a power cut (the page cache is lost
    with the power, so a write that is not synced may leave an empty file).

    Written to `<name>.tmp` beside it, synced, renamed over it and the folder synced: a cut
    leaves the old file or the new one, never a part. The temporary file has `mode` before
    it holds a byte, so a private key is never readable by others, even for a moment.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # a stale temporary file from a cut keeps its own mode otherwise
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def make_read_only(path: Path) -> None:
    """Mode 0444, durably: a mode changed after a file's last fsync may come back 0644 after
    a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, 0o444)
        os.fsync(fd)
    finally:
        os.close(fd)
