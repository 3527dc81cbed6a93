"""The recording medium: how much room is left and whether it still takes writes.

An SD card that has worn out often turns read-only or starts failing writes
without warning, and a full one stops recording; both must be found by a
self-check before a shift, not by the first segment that cannot be sealed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from agent.durable import write_all

PROBE_BYTES = 4096


@dataclass(frozen=True)
class StorageState:
    total_bytes: int
    free_bytes: int
    read_only: bool
    probe_ok: bool
    probe_error: str | None

    def as_record(self) -> dict[str, object]:
        """Integers, bools and strings for the chain; probe_error only when there is one."""
        record: dict[str, object] = {
            "total_bytes": self.total_bytes, "free_bytes": self.free_bytes,
            "read_only": self.read_only, "probe_ok": self.probe_ok}
        if self.probe_error is not None:
            record["probe_error"] = self.probe_error
        return record


def free_bytes(path: Path) -> int:
    """The room an unprivileged writer has (f_bavail × f_frsize); 0 if it cannot be read.

    Cheap and writes nothing: what a periodic alarm should call, not the full probe.
    """
    try:
        stat = os.statvfs(path)
    except OSError:
        return 0
    return stat.f_bavail * stat.f_frsize


def probe_storage(path: Path) -> StorageState:
    """statvfs(3) of `path`, then write, fsync and read back a small random file in it.

    free_bytes is f_bavail × f_frsize: the room an unprivileged writer has, not the
    blocks reserved for root. Errors (ENOSPC, EROFS, EIO, …) are reported in the
    state, never raised. A file system that cannot even be stat'ed offers 0 bytes.
    """
    try:
        stat = os.statvfs(path)
    except OSError as exc:
        return StorageState(0, 0, False, False, f"statvfs: {_describe(exc)}")
    read_only = bool(stat.f_flag & os.ST_RDONLY)
    error = _write_probe(path)
    read_only = read_only or (error is not None and error.startswith("EROFS"))
    return StorageState(stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize,
                        read_only, error is None, error)


def _write_probe(folder: Path) -> str | None:
    """None when the bytes read back are the bytes written, else what went wrong."""
    data = secrets.token_bytes(PROBE_BYTES)
    probe = folder / f".probe-{secrets.token_hex(8)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return _describe(exc)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
            # Drop the now clean pages so the read-back comes from the medium, not
            # the page cache (a no-op on tmpfs, where the pages are the medium).
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        read_back = probe.read_bytes()
    except OSError as exc:
        return _describe(exc)
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    if read_back != data:
        return "read-back mismatch: the bytes read back differ from the bytes written"
    return None


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, f"errno {exc.errno}")
    return f"{name}: {exc.strerror}"


def recording_hours(free_bytes: int, bitrate_bps: int) -> float:
    """Hours of recording that fit in `free_bytes` at `bitrate_bps` (video plus audio)."""
    if bitrate_bps <= 0:
        raise ValueError(f"bitrate must be positive, got {bitrate_bps}")
    return max(free_bytes, 0) * 8 / bitrate_bps / 3600


class SimulatedStorageStall:
    """The simulated device's card can stop answering, as a failing SD card does: while
    `<store>/sim/storage/fault` says `hang`, every write blocks (the recorder hangs, and
    only the watchdog can tell)."""

    POLL_S = 0.05

    def __init__(self, store: Path) -> None:
        self.fault_file = store / "sim" / "storage" / "fault"
        self.fault_file.parent.mkdir(parents=True, exist_ok=True)

    def wait(self) -> None:
        while self._hung():
            time.sleep(self.POLL_S)

    def _hung(self) -> bool:
        try:
            return self.fault_file.read_text(encoding="ascii").strip() == "hang"
        except FileNotFoundError:
            return False
