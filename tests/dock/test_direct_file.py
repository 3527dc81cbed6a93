"""The dock's O_DIRECT writer keeps every byte, in order, at its exact length, resumed or not."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from agent.dock.direct_file import ALIGN, BUFFER, DirectFile, aligned_buffer, aligned_down

SIZES = [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, BUFFER - 1, BUFFER, 2 * BUFFER + 12345]


def _folders(tmp_path: Path) -> list[Path]:
    shm = Path("/dev/shm")
    return [tmp_path] + ([shm] if shm.is_dir() and os.access(shm, os.W_OK) else [])


@pytest.mark.parametrize("size", SIZES)
def test_written_in_uneven_pieces_the_file_is_byte_exact(tmp_path: Path, size: int) -> None:
    data = random.randbytes(size)
    for folder in _folders(tmp_path):
        path = folder / f"direct-{os.getpid()}-{size}.part"
        try:
            with DirectFile(path) as out:
                view, rng = memoryview(data), random.Random(size)
                while view:
                    step = rng.randint(1, 3 * 2**20)
                    out.write(view[:step])
                    view = view[step:]
            assert path.read_bytes() == data, f"{folder}: direct={out.direct}"
        finally:
            path.unlink(missing_ok=True)


def test_files_written_one_after_another_through_one_buffer_keep_only_their_own_bytes(
        tmp_path: Path) -> None:
    """The dock's transfer threads keep their buffer from file to file: what the last
    file left in it must never reach the next one, nor its padding."""
    buffer = aligned_buffer()
    try:
        files = {tmp_path / "a.part": random.randbytes(BUFFER + 3 * ALIGN + 5),
                 tmp_path / "b.part": random.randbytes(ALIGN + 1),
                 tmp_path / "c.part": b""}
        for path, data in files.items():
            with DirectFile(path, buffer=buffer) as out:
                out.write(data)
        assert {path: path.read_bytes() for path in files} == files
    finally:
        buffer.close()


@pytest.mark.parametrize("size", [0, ALIGN + 1, -ALIGN])
def test_a_buffer_not_made_of_whole_blocks_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match=f"buffer size {size} is not a positive multiple"):
        aligned_buffer(size)


def test_a_resume_keeps_whole_blocks_and_replaces_the_rest(tmp_path: Path) -> None:
    data = random.randbytes(3 * ALIGN + 777)
    path = tmp_path / "resumed.part"
    path.write_bytes(data[: 2 * ALIGN + 500] + b"torn")  # a cut mid-block, then garbage
    offset = aligned_down(path.stat().st_size)
    assert offset == 2 * ALIGN
    with DirectFile(path, offset) as out:
        out.write(data[offset:])
    assert path.read_bytes() == data


def test_an_unaligned_resume_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a multiple of 4096"):
        DirectFile(tmp_path / "x.part", 100)


def test_on_a_disk_file_system_the_page_cache_is_bypassed(tmp_path: Path) -> None:
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True,
                          text=True, check=True).stdout.strip()
    if kind not in ("ext2/ext3", "xfs", "btrfs"):
        pytest.skip(f"{tmp_path} is on {kind}, which may not take O_DIRECT")
    with DirectFile(tmp_path / "y.part") as out:
        out.write(b"x")
    assert out.direct
