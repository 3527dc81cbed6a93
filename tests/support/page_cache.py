"""What a power cut leaves of a folder: only what was synced, as POSIX promises it.

A process killed by SIGKILL keeps the page cache: every byte written survives. A power
cut loses it. `PageCache` watches every fsync(2) and fdatasync(2) made in this process
(the real call is made first) and keeps what each one made durable: a file's bytes as
they were at its last sync, and a folder's names as they were at its last sync. What was
there before the watch began counts as durable.

`cut(into, names)` builds the folder as the power cut leaves it, in one of the two ways a
real file system may leave it, both of which the code must survive:

- names "kept": every name as it is now (a journalling file system committed them
  within seconds), but a file's bytes only as synced: a file never synced is empty.
  This is how ext4 with delayed allocation leaves a file written but not synced;
- names "synced": a folder holds only the names it held at its last sync (none if
  never synced): a file created or renamed without a sync of its folder is gone.

A model in this process, not a file system: writes another process makes are judged by
the same rules only when this process syncs them, and a file rewritten in place is
modelled by its synced bytes, not by a truncation the journal may have kept.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

Inode = tuple[int, int]  # (st_dev, st_ino)


@dataclass(frozen=True)
class _Entry:
    inode: Inode
    mode: int  # st_mode: type and permissions


@dataclass
class PageCache:
    root: Path
    _names: dict[Inode, dict[str, _Entry]] = field(default_factory=dict)  # synced folders
    _bytes: dict[Inode, bytes] = field(default_factory=dict)              # synced files
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _frozen: bool = False

    def baseline(self) -> None:
        """All that is under root now is on disk: the cut comes after it."""
        if not self.root.exists():
            return
        for folder, _, files in os.walk(self.root):
            self._sync(Path(folder))
            for name in files:
                path = Path(folder) / name
                if path.is_file() and not path.is_symlink():
                    self._sync(path)

    def synced(self, fd: int) -> None:
        """Record what a sync of `fd` has just made durable."""
        self._sync(Path(os.readlink(f"/proc/self/fd/{fd}")), f"/proc/self/fd/{fd}")

    def _sync(self, path: Path, opened: str | None = None) -> None:
        if not path.is_relative_to(self.root):
            return
        st = os.stat(opened or path)
        inode = (st.st_dev, st.st_ino)
        with self._lock:
            if self._frozen:
                return
            if stat.S_ISDIR(st.st_mode):
                self._names[inode] = {entry.name: _entry(entry.stat(follow_symlinks=False))
                                      for entry in os.scandir(path)}
            else:
                with open(opened or path, "rb") as f:  # the same file, even if renamed
                    self._bytes[inode] = f.read()

    def cut(self, into: Path, names: Literal["kept", "synced"] = "synced") -> Path:
        """The folder as the power cut leaves it, built at `into`; later syncs are ignored."""
        with self._lock:
            self._frozen = True
            into.mkdir(parents=True)
            if names == "synced":
                self._build_synced(_entry(self.root.stat()).inode, into)
            else:
                self._build_kept(self.root, into)
        return into

    def _build_synced(self, folder: Inode, into: Path) -> None:
        for name, entry in self._names.get(folder, {}).items():
            self._make(into / name, entry, lambda target, e=entry: self._build_synced(
                e.inode, target))

    def _build_kept(self, folder: Path, into: Path) -> None:
        for item in os.scandir(folder):
            self._make(into / item.name, _entry(item.stat(follow_symlinks=False)),
                       lambda target, path=Path(item.path): self._build_kept(path, target))

    def _make(self, target: Path, entry: _Entry, fill: Callable[[Path], None]) -> None:
        if stat.S_ISDIR(entry.mode):
            target.mkdir()
            fill(target)
        elif stat.S_ISREG(entry.mode):
            target.write_bytes(self._bytes.get(entry.inode, b""))
        else:
            return  # a socket or the like: gone with the process
        target.chmod(stat.S_IMODE(entry.mode))


def _entry(st: os.stat_result) -> _Entry:
    return _Entry((st.st_dev, st.st_ino), st.st_mode)


@contextmanager
def page_cache(root: Path) -> Iterator[PageCache]:
    """Watch the syncs under `root` while the block runs (every thread's)."""
    cache = PageCache(root.resolve())
    cache.baseline()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("fsync", "fdatasync"):
            real = getattr(os, name)
            patch.setattr(os, name, _watched(real, cache))
        yield cache


def _watched(sync: Callable[[int], None], cache: PageCache) -> Callable[[int], None]:
    def watched(fd: int) -> None:
        sync(fd)
        cache.synced(fd)
    return watched
