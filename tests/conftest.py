"""Shared fixtures: a fast simulated device, and a recorded store to verify or damage."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.device import record_segments, write_device_config
from tests.support.mosquitto import brokers, pki  # noqa: F401  (private Mosquitto brokers, certificates)
from tests.support.pulse import pulse_server  # noqa: F401  (a session fixture for the audio tests)
from tests.support.s3server import s3_server  # noqa: F401  (a session's SeaweedFS, real S3)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a fast simulated-device config with its store in tmp_path/store."""

    def write(name: str = "device.toml", store: Path | None = None, **values: object) -> Path:
        return write_device_config(tmp_path / name, store or tmp_path / "store", **values)

    return write


@pytest.fixture(scope="session")
def recorded_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one recording of at least 5 segments, recorded once per session."""
    root = tmp_path_factory.mktemp("recorded")
    record_segments(write_device_config(root / "device.toml", root / "store"), 5)
    return root / "store"


@pytest.fixture
def store_copy(recorded_store: Path, tmp_path: Path) -> Path:
    """A private copy of the recorded store that a test may damage."""
    copy = tmp_path / "copy"
    shutil.copytree(recorded_store, copy, ignore=shutil.ignore_patterns("control.sock"))
    for path in copy.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)
    return copy


SYSTEM_TESTS = Path(__file__).resolve().parent / "system"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in tests/system runs the whole daemon: it is marked `system`, like the tests
    elsewhere that start one (marked where they stand)."""
    for item in items:
        if SYSTEM_TESTS in item.path.parents:
            item.add_marker(pytest.mark.system)
