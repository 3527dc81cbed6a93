"""What the dock's whole-daemon tests share: the agency's PKI for the dock link (`dock_pki`,
named apart from the brokers' `pki` of tests/conftest.py), a store recorded once per module,
and a device docked on a copy of it for each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.device import record_segments, write_device_config
from tests.support.dockside import Docked, docked_device
from tests.support.pki import Pki, make_pki


@pytest.fixture(scope="module")
def dock_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def recorded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one recording of at least the module's SEGMENTS sealed segments (4 where
    the module names none)."""
    root = tmp_path_factory.mktemp("recorded")
    record_segments(write_device_config(root / "device.toml", root / "store"),
                    getattr(request.module, "SEGMENTS", 4))
    return root / "store"


@pytest.fixture
def device(tmp_path: Path, recorded: Path, dock_pki: Pki) -> Iterator[Docked]:
    with docked_device(tmp_path, recorded, dock_pki) as docked:
        yield docked
