"""The medium's room and health, measured on a real tmpfs filled up and turned read-only."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hal.storage import PROBE_BYTES, probe_storage, recording_hours

MIB = 1024 * 1024


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of its own, so filling it harms nothing; needs root (CI runs as root)."""
    medium = tmp_path / "medium"
    medium.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command on this machine")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(medium)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here (needs root or CAP_SYS_ADMIN): "
                    f"{done.stderr.strip()}")
    yield medium
    subprocess.run(["umount", str(medium)], check=True)


def fill(path: Path, size: int) -> None:
    """Append `size` bytes, or until the file system is full."""
    with path.open("ab") as out:
        try:
            out.write(b"\xa5" * size)
            out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def leftovers(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith(".probe-")]


def test_nearly_full_then_full_medium(tmpfs: Path) -> None:
    state = probe_storage(tmpfs)
    assert (state.total_bytes, state.free_bytes) == (MIB, MIB)
    assert state.probe_ok and not state.read_only

    fill(tmpfs / "fill", MIB - 4 * PROBE_BYTES)
    state = probe_storage(tmpfs)
    assert state.free_bytes == 4 * PROBE_BYTES
    assert state.probe_ok and state.probe_error is None
    assert state.as_record() == {"total_bytes": MIB, "free_bytes": 4 * PROBE_BYTES,
                                 "read_only": False, "probe_ok": True}

    fill(tmpfs / "fill", MIB)
    state = probe_storage(tmpfs)
    assert state.free_bytes == 0
    assert not state.probe_ok and not state.read_only
    assert state.probe_error is not None and state.probe_error.startswith("ENOSPC")
    assert state.as_record()["probe_error"] == state.probe_error
    assert leftovers(tmpfs) == []


def test_read_only_medium(tmpfs: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    state = probe_storage(tmpfs)
    assert state.read_only and not state.probe_ok
    assert state.probe_error is not None and state.probe_error.startswith("EROFS")
    assert state.total_bytes == MIB


def test_probe_on_the_test_disk_leaves_nothing_behind(tmp_path: Path) -> None:
    state = probe_storage(tmp_path)
    assert state.probe_ok and not state.read_only and state.free_bytes > 0
    assert state.total_bytes >= state.free_bytes
    assert leftovers(tmp_path) == []


def test_missing_folder_is_reported_not_raised(tmp_path: Path) -> None:
    state = probe_storage(tmp_path / "absent")
    assert (state.total_bytes, state.free_bytes, state.probe_ok) == (0, 0, False)
    assert state.probe_error is not None and state.probe_error.startswith("statvfs: ENOENT")


def test_recording_hours() -> None:
    assert recording_hours(3_600_000_000, 8_000_000) == 1.0  # 28.8 Gbit at 8 Mbit/s
    assert recording_hours(-1, 8_000_000) == 0.0
    with pytest.raises(ValueError, match="bitrate must be positive"):
        recording_hours(1, 0)
