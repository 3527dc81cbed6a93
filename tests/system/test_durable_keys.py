"""The key files a device starts from survive a power cut, and a public key a cut left
empty is written again from the signing key, with a record that says so."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from agent.device.selfcheck import Status
from agent.evidence.chain import read_bodies
from agent.evidence.keys import fingerprint, load_or_create_device_key, load_public_key
from agent.evidence.verify import verify_store
from tests.evidence.test_chain_format import run_procedure, tools  # noqa: F401  (a fixture)
from tests.support.device import BODYCAM, running_daemon
from tests.support.page_cache import page_cache


def records(store: Path, kind: str) -> list[dict]:
    return [r["payload"] for r in read_bodies(store / "chain.jsonl") if r["type"] == kind]


def bodycam(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BODYCAM, *args], capture_output=True, text=True, timeout=60)


def start_and_check(config: Path) -> None:
    """Start the daemon; its self-check passes."""
    with running_daemon(config) as daemon:
        result = daemon.selfcheck()
    assert result.overall is Status.PASS, result.render()


@pytest.mark.parametrize("names", ["kept", "synced"])
def test_a_power_cut_in_a_new_stores_first_seconds_keeps_its_keys(write_config, tmp_path: Path,
                                                                  names: str) -> None:
    """The cut comes as soon as the new device is up: only what it synced is left (see
    tests/support/page_cache.py), and the next start finds a store that verifies."""
    store = tmp_path / "store"
    with page_cache(store) as cache, running_daemon(write_config(store=store)):
        cut = cache.cut(tmp_path / "after-the-cut", names)
    assert (cut / "keys" / "device.pub").read_bytes(), "device.pub is on disk, whole"
    config = write_config("after.toml", store=cut)
    start_and_check(config)
    report = verify_store(cut)
    assert report.ok, report.summary()
    assert records(cut, "key_repaired") == [], "nothing was lost, so nothing to repair"


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbled(path: Path) -> None:
    path.write_bytes(b"\0" * 113)  # what some file systems show of blocks never written


@pytest.mark.parametrize(("damage", "found"), [
    (Path.unlink, "missing"), (_empty, "empty"),
    (_garbled, "unreadable (not a PEM public key)")], ids=["missing", "empty", "garbled"])
def test_a_lost_device_pub_is_written_again_and_sealed(write_config, tmp_path: Path,
                                                       tools: Path,  # noqa: F811
                                                       damage, found: str) -> None:
    config = write_config()
    store = tmp_path / "store"
    with running_daemon(config):
        pass
    keys = store / "keys"
    first = fingerprint(load_public_key(keys / "device.pub"))
    before = (keys / "device.pub").read_bytes()
    damage(keys / "device.pub")

    start_and_check(config)

    assert (keys / "device.pub").read_bytes() == before
    [repair] = records(store, "key_repaired")
    assert repair["key_file"] == "keys/device.pub" and repair["found"] == found
    assert repair["fingerprint"] == first == records(store, "boot")[0]["key_fingerprint"]
    if damage is _garbled:
        assert (store / repair["kept_in"]).read_bytes() == b"\0" * 113, "kept, not destroyed"
    else:
        assert repair["kept_in"] is None
    report = verify_store(store)
    assert report.ok, report.summary()
    assert bodycam("verify", str(store)).returncode == 0
    by_hand = run_procedure(store, tools, tmp_path / "work")  # docs/chain-format.md's script
    assert by_hand.returncode == 0, by_hand.stdout + by_hand.stderr


def test_after_a_rotation_current_pub_is_written_again_but_device_pub_cannot_be(
        write_config, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """current.pub comes from the signing key; device.pub is the FIRST key, which the chain
    names only by its fingerprint: it is left as it is, and the log says where to get it."""
    config = write_config()
    store = tmp_path / "store"
    keys = store / "keys"
    with running_daemon(config):
        pass
    register = tmp_path / "register.pub"  # the agency's enrolment register keeps a copy
    register.write_bytes((keys / "device.pub").read_bytes())
    rotated = bodycam("keys", "rotate", "--config", str(config), "--reason", "yearly")
    assert rotated.returncode == 0, rotated.stderr
    current = (keys / "current.pub").read_bytes()
    (keys / "current.pub").write_bytes(b"")
    (keys / "device.pub").write_bytes(b"")

    with caplog.at_level(logging.CRITICAL), running_daemon(config) as daemon:
        result = daemon.selfcheck()
    [tail] = [item for item in result.items if item.name == "chain tail"]
    assert tail.status is Status.FAIL, "the store cannot check itself without its first key"
    assert f"{keys / 'device.pub'} is not a readable PEM public key" in tail.value

    assert (keys / "current.pub").read_bytes() == current
    assert (keys / "device.pub").read_bytes() == b"", "never written with another key"
    [repair] = records(store, "key_repaired")
    assert repair["key_file"] == "keys/current.pub" and repair["found"] == "empty"
    assert repair["fingerprint"] == fingerprint(
        load_or_create_device_key(keys).public_key())
    first = fingerprint(load_public_key(register))
    assert f"keys/device.pub is empty and cannot be written again: it is the key {first[:16]}" \
        in caplog.text
    assert verify_store(store, register).ok
    result = bodycam("verify", str(store))
    [line] = result.stderr.splitlines()
    assert result.returncode == 2
    assert line.startswith(f"bodycam: {keys / 'device.pub'} is not a readable PEM public key")
