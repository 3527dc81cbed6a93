"""Opening a sealed file to serve it: only the recorder's own file, never what a link names.

Anyone who can write to the store's `sealed/` could plant a symbolic link or a hard
link there, at the name a record gives, to the device's private key or to any file
the daemon can read; served as is, the dock would receive it (and keep it, as a
mismatch). So a sealed file is opened relative to a descriptor of `sealed/` itself
(itself no link), by its one-component name, with O_NOFOLLOW, and the opened
descriptor is checked before a byte is sent: a regular file with one link. A FIFO
planted there is opened without blocking (O_NONBLOCK) and refused by the same check.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO

from agent.logs import Throttled

log = logging.getLogger(__name__)

SEALED_DIR = "sealed"
WARN_EVERY_S = 60.0  # at most one refusal logged per this many seconds; the rest counted


class NotServed(Exception):
    """The name is not one this device serves; `gone` when nothing is there (purged)."""

    def __init__(self, message: str, gone: bool = False) -> None:
        super().__init__(message)
        self.gone = gone


_refusals = Throttled(log, WARN_EVERY_S)


def open_sealed(store: Path, name: str) -> BinaryIO:
    """`name` (a record's `sealed/<file>`) opened for reading, or NotServed saying why.
    The caller owns the file and closes it."""
    folder, _, base = name.partition("/")
    if folder != SEALED_DIR or base in ("", ".", "..") or "/" in base:
        raise _refuse(name, "not a file name directly inside sealed/")
    try:
        directory = os.open(store / SEALED_DIR,
                            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _refuse(name, f"sealed/ is not a directory of its own ({exc.strerror})") from None
    try:
        fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY |
                     os.O_CLOEXEC, dir_fd=directory)
    except FileNotFoundError:
        raise NotServed(f"{name}: no such file", gone=True) from None
    except OSError as exc:
        raise _refuse(name, "a symbolic link" if exc.errno == errno.ELOOP
                      else f"cannot be opened ({exc.strerror})") from None
    finally:
        os.close(directory)
    held = os.fstat(fd)
    problem = "not a regular file" if not stat.S_ISREG(held.st_mode) else \
        f"a file with {held.st_nlink} hard links" if held.st_nlink != 1 else None
    if problem:
        os.close(fd)
        raise _refuse(name, problem)
    return os.fdopen(fd, "rb", buffering=0)


def _refuse(name: str, why: str) -> NotServed:
    _refusals.warning(f"{name}: not served: {why}; only the recorder's own files (regular, "
                      "one link, inside sealed/) leave the device. Something other than the "
                      "recorder wrote to the store")
    return NotServed(f"{name}: not served: {why}")
