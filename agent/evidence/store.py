"""The store on the device: where keys, the chain and the segments live, and how they reach disk."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.durable import fsync_dir


@dataclass(frozen=True)
class Store:
    """The layout of docs/chain-format.md: keys/, chain.jsonl, open/, sealed/, the reserve and
    the control socket."""

    root: Path

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def chain(self) -> Path:
        return self.root / "chain.jsonl"

    @property
    def open(self) -> Path:
        return self.root / "open"

    @property
    def sealed(self) -> Path:
        return self.root / "sealed"

    @property
    def control_socket(self) -> Path:
        return self.root / "control.sock"

    @property
    def reserve(self) -> Path:
        return self.root / "reserve"

    def hold_reserve(self, size: int) -> bool:
        """Preallocate the reserve; False when the disk cannot spare it now."""
        if self.reserve.exists() and self.reserve.stat().st_blocks * 512 >= size:
            return True
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            self.reserve.unlink(missing_ok=True)
            return False
        fsync_dir(self.root)
        return True

    def release_reserve(self) -> None:
        """Free the reserve for the records that must follow a full disk."""
        self.reserve.unlink(missing_ok=True)

    def prepare(self) -> Store:
        """Create the folders; keys/ is owner-only because it holds the signing key."""
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in (self.open, self.sealed):
            folder.mkdir(exist_ok=True)
        self.keys.mkdir(mode=0o700, exist_ok=True)
        fsync_dir(self.root)
        return self

    def move_to_sealed(self, path: Path) -> Callable[[int], dict[str, str]]:
        """For `Chain.append(name_for_seq=...)`: rename a finished, read-only file from
        open/ to sealed/<seq>, durably, before the record that names it is written. Never
        over a file already there (FileExistsError): that one is sealed material too."""

        def move(seq: int) -> dict[str, str]:
            name = f"sealed/{seq:08d}{''.join(path.suffixes)}"  # named by its record's seq
            if (self.root / name).exists():
                raise FileExistsError(errno.EEXIST, "a file already holds this seq; left "
                                      f"as it is, and {path.name} is not sealed", name)
            os.rename(path, self.root / name)
            fsync_dir(self.sealed)
            fsync_dir(path.parent)
            return {"file": name}

        return move
