"""A voice note or exemption cut at its seal is recovered into the chain at the next start,
and no record ever takes a sequence number a file in sealed/ already holds."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.evidence.age import recipient_string
from agent.evidence.chain import SEALED_FILE_TYPES, read_bodies
from agent.evidence.store import Store
from agent.evidence.verify import verify_store
from tests.evidence.test_chain_format import run_procedure, tools  # noqa: F401  (a fixture)
from tests.support.device import BODYCAM, running_daemon, spawn_daemon, wait_for
from tests.support.page_cache import page_cache


class PowerCut(Exception):
    """The power went: the code after it never ran (the on-disk state is the model's)."""


@dataclass(frozen=True)
class CutAtSeal(Store):
    """The store, with a power cut (`cut`) right before or right after a file's rename
    into sealed/: the moment the record that names it has not been written yet."""

    cut: Callable[[], object]
    renamed: bool

    def move_to_sealed(self, path: Path) -> Callable[[int], dict[str, str]]:
        move = super().move_to_sealed(path)

        def cut_at(seq: int) -> dict[str, str]:
            if self.renamed:
                move(seq)
            self.cut()
            raise PowerCut(f"the record for seq {seq} was never written")

        return cut_at


def sealed_records(store: Path) -> list[dict[str, Any]]:
    return [r for r in read_bodies(store / "chain.jsonl") if r["type"] in SEALED_FILE_TYPES]


@pytest.mark.parametrize("renamed", [True, False], ids=["after-rename", "before-rename"])
@pytest.mark.parametrize(("kind", "encrypted"), [("voice_note", False), ("exemption", True)],
                         ids=["voice-note", "encrypted-exemption"])
def test_a_note_cut_at_its_seal_is_recovered_into_the_chain(
        write_config, tmp_path: Path, tools: Path, kind: str, encrypted: bool,  # noqa: F811
        renamed: bool) -> None:
    recipient = recipient_string(X25519PrivateKey.generate().public_key())
    extra = f'[encryption]\nenabled = true\nrecipients = ["{recipient}"]' if encrypted else ""
    store, after = tmp_path / "store", tmp_path / "after-the-cut"
    with page_cache(store) as cache, running_daemon(write_config(note_max=1,
                                                                 extra=extra)) as daemon:
        daemon.voice_notes._store = CutAtSeal(store, lambda: cache.cut(after), renamed)
        with pytest.raises(PowerCut):
            daemon.voice_notes.take(kind, {"interruption": None} if kind == "voice_note" else {})
    head = len(read_bodies(after / "chain.jsonl"))
    where = "sealed" if renamed else "open"
    [left] = list((after / where).iterdir())
    assert not renamed or left.name.startswith(f"{head + 1:08d}."), "named by the next seq"
    data = left.read_bytes()
    assert data, "the note was synced before its rename"

    with running_daemon(write_config("after.toml", store=after, extra=extra)):
        pass

    [recovered] = sealed_records(after)
    payload = recovered["payload"]
    assert recovered["type"] == "file_recovered" and payload["recovered"] is True
    assert payload["came_from"] == f"{where}/{left.name}"
    assert (payload["size"], payload["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert (after / payload["file"]).read_bytes() == data
    assert recovered["seq"] > head + 1, "the seq its file held went to the boot record"
    assert payload["file"] == f"sealed/{recovered['seq']:08d}{''.join(left.suffixes)}"
    assert ("encryption" in payload) is encrypted
    if not encrypted:
        with wave.open(str(after / payload["file"])) as note:
            assert note.getnframes() > 0
    assert not list((after / "open").iterdir()), "nothing is left outside the chain"
    report = verify_store(after)
    assert report.ok, report.summary()
    by_hand = run_procedure(after, tools, tmp_path / "work")  # docs/chain-format.md's script
    assert by_hand.returncode == 0, by_hand.stdout + by_hand.stderr


def test_no_record_takes_a_seq_a_sealed_file_holds(write_config, tmp_path: Path) -> None:
    """Files past the chain's head in sealed/ (what a cut leaves at seq head + 1, or more):
    each is recovered under a new seq; none is overwritten by a record taking its seq."""
    config = write_config()
    store = tmp_path / "store"
    with running_daemon(config):
        pass
    head = len(read_bodies(store / "chain.jsonl"))
    strays = {store / "sealed" / f"{head + n:08d}{suffix}": f"held by {n}".encode()
              for n, suffix in ((1, ".wav"), (2, ".ts"), (3, ".wav.age"))}
    for path, data in strays.items():
        path.write_bytes(data)
        path.chmod(0o444)

    with running_daemon(config) as daemon:
        daemon.controls.press()  # segments sealed while the strays would have been in the way
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 3, what="3 segments")

    chain = read_bodies(store / "chain.jsonl")
    named = {r["payload"]["file"]: r for r in chain if r["type"] in SEALED_FILE_TYPES}
    recovered = {r["payload"]["came_from"]: r["payload"] for r in chain
                 if r["type"] == "file_recovered"}
    assert set(recovered) == {f"sealed/{path.name}" for path in strays}
    for path, data in strays.items():
        payload = recovered[f"sealed/{path.name}"]
        assert (store / payload["file"]).read_bytes() == data
    for name, record in named.items():
        assert name.startswith(f"sealed/{record['seq']:08d}.")
    report = verify_store(store)
    assert report.ok, report.summary()


def test_a_segment_with_both_names_after_a_cut_is_sealed_once(write_config,
                                                              tmp_path: Path) -> None:
    """A cut between the seal's two folder syncs (sealed/ synced, open/ not) leaves the file
    under both names, as POSIX allows (the power-cut file system of issue 19 made it): the
    next start seals it once, and no sealed file is left that no record names."""
    config = write_config()
    store = tmp_path / "store"
    daemon = spawn_daemon(config, store)
    subprocess.run([*BODYCAM, "press", "--config", str(config)], check=True, timeout=30)
    wait_for(lambda: any((store / "sealed").glob("*.ts")), what="a segment")
    daemon.send_signal(signal.SIGKILL)  # a cut: the recording stays open
    daemon.wait(10)
    chain = read_bodies(store / "chain.jsonl")
    recording = max(r["seq"] for r in chain if r["type"] == "record_start")
    index = sum(1 for r in chain if r["type"] == "segment_sealed"
                and r["payload"]["recording"] == recording)
    # The segment being written when the power went, as a seal cut between its folder
    # syncs leaves it: renamed to the next seq in sealed/, its name in open/ still there.
    twin = store / "open" / f"{recording:08d}-{index:05d}.ts"
    assert twin.exists(), sorted(p.name for p in (store / "open").iterdir())
    os.link(twin, store / "sealed" / f"{len(chain) + 1:08d}.ts")

    with running_daemon(config):
        pass

    chain = read_bodies(store / "chain.jsonl")
    named = [r["payload"]["file"] for r in chain if r["type"] in SEALED_FILE_TYPES]
    segments = [r for r in chain if r["type"] == "segment_sealed"
                and r["payload"]["recording"] == recording]
    assert len(segments) == index + 1, "the file under both names is sealed once"
    assert sorted(f"sealed/{p.name}" for p in (store / "sealed").iterdir()) == sorted(named)
    report = verify_store(store)
    assert report.ok, report.summary()
