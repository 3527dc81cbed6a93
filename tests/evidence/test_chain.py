"""The journal itself: owner-only keys, torn-tail repair at start, refusal of exposed keys."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.evidence.chain import read_bodies
from agent.evidence.store import Store
from agent.evidence.verify import verify_store
from tests.support.device import running_daemon


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_device_key_is_created_owner_only(recorded_store: Path) -> None:
    keys = recorded_store / "keys"
    assert mode(keys) == 0o700
    assert mode(keys / "device.key") == 0o600
    assert b"BEGIN PUBLIC KEY" in (keys / "device.pub").read_bytes()


@pytest.mark.system
def test_torn_last_line_is_cut_kept_and_reported(store_copy: Path, write_config) -> None:
    torn = b'{"boot_id":"x","clock":{"est_error_us":5'
    with (store_copy / "chain.jsonl").open("ab") as chain:
        chain.write(torn)
    assert not verify_store(store_copy).ok

    with running_daemon(write_config(store=store_copy)):
        pass

    report = verify_store(store_copy)
    assert report.ok, report.summary()
    [kept] = store_copy.glob("chain.jsonl.torn-*")
    assert kept.read_bytes() == torn
    boots = read_bodies(store_copy / "chain.jsonl")
    repair = [b["payload"]["tail_repair"] for b in boots if b["type"] == "boot"][-1]
    assert repair == {"torn_bytes": len(torn), "kept_in": kept.name}


@pytest.mark.system
def test_damage_before_the_tail_is_not_repaired_away(store_copy: Path, write_config) -> None:
    chain = store_copy / "chain.jsonl"
    lines = chain.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][:30] + b"\n"
    chain.write_bytes(b"".join(lines))
    with running_daemon(write_config(store=store_copy)):
        pass
    report = verify_store(store_copy)
    assert not report.ok
    assert str(report.findings[0]).startswith("line 3: is not a whole signed record")
    assert not list(store_copy.glob("chain.jsonl.torn-*"))


@pytest.mark.system
def test_daemon_refuses_a_key_readable_by_others(store_copy: Path, write_config) -> None:
    (store_copy / "keys" / "device.key").chmod(0o644)
    result = subprocess.run([sys.executable, "-m", "agent", "run", "--config",
                             str(write_config(store=store_copy))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "device.key is open to others (mode 0644)" in result.stderr
    assert "chmod 600" in result.stderr


def test_a_file_is_never_sealed_over_another(tmp_path: Path) -> None:
    store = Store(tmp_path).prepare()
    held = store.sealed / "00000007.wav"
    held.write_bytes(b"sealed before")
    note = store.open / "voice_note-1.wav"
    note.write_bytes(b"a new note")
    with pytest.raises(FileExistsError, match="a file already holds this seq"):
        store.move_to_sealed(note)(7)
    assert (held.read_bytes(), note.read_bytes()) == (b"sealed before", b"a new note")
