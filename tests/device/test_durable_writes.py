"""Every file the device starts from is whole after a power cut that comes right after it
was written: each writer runs under tests/support/page_cache.py, which keeps only what was
synced, and the cut is taken both ways a file system may leave it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import pki
from agent.config import BatteryConfig, ThermalConfig
from agent.device import enrollment
from agent.durable import fsync_dir
from agent.evidence.chain import Chain
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.store import Store
from hal.battery import open_battery
from hal.clock import SimulatedClock
from hal.thermal import open_thermal
from tests.support.page_cache import page_cache


def _key_pair(store: Store) -> None:
    load_or_create_device_key(store.keys)


def _request(store: Store) -> None:
    enrollment.request(store.keys, Ed25519PrivateKey.generate(), "TEST-0001")


def _rotation(store: Store) -> None:
    key = load_or_create_device_key(store.keys, store.chain)
    chain = Chain(store.chain, key, lambda: ("TEST-0001", ""), SimulatedClock().state, "boot")
    try:
        enrollment.rotate(store.keys, chain, key, "TEST-0001", "yearly")
    finally:
        chain.close()


def _dock_pki(store: Store) -> None:
    (store.root / "dock").mkdir()
    fsync_dir(store.root)
    pki.write_dock_pki(store.keys, Ed25519PrivateKey.generate(), store.root / "dock",
                       "TEST-0001", "dock-1")


def _torn_tail(store: Store) -> None:
    store.chain.write_bytes(b'{"seq":1,"type":"bo')
    Chain(store.chain, Ed25519PrivateKey.generate(), lambda: ("", ""),
          SimulatedClock().state, "boot").close()


WRITERS: dict[str, Callable[[Store], None]] = {
    "key pair": _key_pair, "certificate request": _request, "rotation": _rotation,
    "dock PKI": _dock_pki, "torn tail kept": _torn_tail,
}


@pytest.mark.parametrize("names", ["kept", "synced"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_what_was_written_is_whole_after_a_cut(tmp_path: Path, writer: str, names: str) -> None:
    root = tmp_path / "store"
    with page_cache(root) as cache:
        store = Store(root).prepare()
        WRITERS[writer](store)
        cut = cache.cut(tmp_path / "after-the-cut", names)
    written = {path.relative_to(root): path.read_bytes() for path in root.rglob("*")
               if path.is_file() and not path.name.endswith(".tmp")
               and path.name != "chain.jsonl"}
    assert written
    after = {name: (cut / name).read_bytes() if (cut / name).is_file() else None
             for name in written}
    assert after == written


@pytest.mark.parametrize("names", ["kept", "synced"])
def test_the_simulated_devices_seeds_read_the_same_after_a_cut(tmp_path: Path,
                                                             names: str) -> None:
    root = tmp_path / "store"
    root.mkdir()
    with page_cache(root) as cache:
        battery = open_battery(BatteryConfig(backend="sim"), root)
        thermal = open_thermal(ThermalConfig(backend="sim"), root)
        before = battery.state(), thermal.celsius(), thermal.power_flags().word
        cut = cache.cut(tmp_path / "after-the-cut", names)
    battery = open_battery(BatteryConfig(backend="sim"), cut)
    thermal = open_thermal(ThermalConfig(backend="sim"), cut)
    assert (battery.state(), thermal.celsius(), thermal.power_flags().word) == before
