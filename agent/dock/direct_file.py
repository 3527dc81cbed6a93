"""A file written around the page cache (O_DIRECT): for the dock's copy of evidence.

The dock must make every byte it pulls durable before it reports custody, since
the device may then free its copy. Written the usual way, each byte is first
copied into the page cache and later flushed by fsync; on the build machine that
copy costs more CPU than decrypting the TLS stream (1.5 s per GiB, against 0.25 s
with O_DIRECT) and competes with the pull itself. O_DIRECT hands aligned blocks
straight to the disk, so what is written is already on its way to the medium.

O_DIRECT needs the buffer, the offset and the length aligned to the block size:
bytes are gathered in a page-aligned buffer and written in whole blocks; the tail
is written as a padded block, then the file is cut to its true length. A file
system without O_DIRECT (tmpfs) gets the same calls without the flag.

A writer that writes file after file passes the same buffer to each (see
`aligned_buffer`): a new 4 MiB map per file costs a page fault and a zeroed page
for each of its 1,024 pages, and an unmap; on the build machine, keeping the
buffer cut the dock's CPU per GiB pulled by about 5 %.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from pathlib import Path
from types import TracebackType
from typing import Protocol

ALIGN = 4096          # a multiple of every logical block size in use (512, 4096)
BUFFER = 4 * 2**20    # gathered before each write: large writes keep the disk busy


class Digest(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


def aligned_down(offset: int) -> int:
    """Where an append may resume: O_DIRECT writes start on a block boundary."""
    return offset - offset % ALIGN


def aligned_buffer(size: int = BUFFER) -> mmap.mmap:
    """A page-aligned buffer for `DirectFile`. Anonymous maps are page-aligned; a private
    one, unlike the default shared one, is plain memory that O_DIRECT pins on its fast
    path."""
    if size <= 0 or size % ALIGN:
        raise ValueError(f"buffer size {size} is not a positive multiple of {ALIGN}")
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


class ForeignFile(OSError):
    """A link at the name of a file the dock writes or keeps: not the dock's own file."""


def open_own(path: Path, flags: int, mode: int = 0o600) -> int:
    """`path` opened without following a symbolic link, and checked to be a regular file
    with one link: a link planted at the name would have the dock write, or keep as
    evidence, another file. O_NOFOLLOW holds at the open itself, so no check races it;
    O_NONBLOCK (no effect on a regular file) keeps a FIFO planted there from blocking."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            raise ForeignFile(exc.errno, f"{path}: a symbolic link or a FIFO; the dock never "
                              "follows a link nor writes to a FIFO (remove it and pull "
                              "again)") from None
        raise
    held = os.fstat(fd)
    if not stat.S_ISREG(held.st_mode) or held.st_nlink != 1:
        os.close(fd)
        raise ForeignFile(errno.EPERM, f"{path}: not a regular file with one link; the dock "
                          "writes only its own files (remove it and pull again)")
    return fd


class DirectFile:
    """Appends to `path` from `offset` (block-aligned) on; `close` makes its length exact.

    `digest`, when given, is fed every byte written, in the same large blocks: one
    call per 4 MiB releases the GIL for its whole length, where one per network read
    would hand the GIL back and forth with the threads receiving. `buffer` (from
    `aligned_buffer`), when given, is the caller's to keep and to pass to its next
    file once this one is closed; without it the file maps one of its own. Not
    thread-safe: one writer per file, as the dock's one transfer per file.
    """

    def __init__(self, path: Path, offset: int = 0, digest: Digest | None = None,
                 buffer: mmap.mmap | None = None) -> None:
        if offset % ALIGN:
            raise ValueError(f"{path}: resume offset {offset} is not a multiple of {ALIGN}")
        flags = os.O_WRONLY | os.O_CREAT
        try:
            self._fd = open_own(path, flags | os.O_DIRECT)
            self.direct = True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._fd = open_own(path, flags)
            self.direct = False
        os.fchmod(self._fd, 0o600)  # not yet known to be the device's: owner-only, even a
        os.ftruncate(self._fd, offset)  # part left by an earlier pull
        os.lseek(self._fd, offset, os.SEEK_SET)
        self._length = offset  # bytes accepted, the padding of the last block not counted
        self._own_buffer = buffer is None
        self._buffer = aligned_buffer() if buffer is None else buffer
        self._view = memoryview(self._buffer)
        self._size = len(self._view)
        self._filled = 0
        self._digest = digest

    @property
    def length(self) -> int:
        """The file's length once closed: every byte accepted, from offset 0."""
        return self._length

    def write(self, data: bytes | memoryview) -> None:
        size = len(data)
        self._length += size
        if self._filled + size < self._size:  # the usual network read: one copy, no loop
            self._view[self._filled:self._filled + size] = data
            self._filled += size
            return
        view = memoryview(data)
        while view:
            take = min(len(view), self._size - self._filled)
            self._view[self._filled:self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled == self._size:
                if self._digest is not None:
                    self._digest.update(self._view)
                self._drain(self._size)

    def close(self) -> None:
        """Write what is gathered (the last block padded), cut the padding off, close."""
        try:
            if self._filled:
                if self._digest is not None:
                    self._digest.update(self._view[:self._filled])
                padded = -(-self._filled // ALIGN) * ALIGN
                self._view[self._filled:padded] = bytes(padded - self._filled)
                self._drain(padded)
                os.ftruncate(self._fd, self._length)
        finally:
            self._view.release()
            if self._own_buffer:
                self._buffer.close()
            os.close(self._fd)

    def _drain(self, size: int) -> None:
        written = 0
        while written < size:
            written += os.write(self._fd, self._view[written:size])
        self._filled = 0

    def __enter__(self) -> DirectFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
