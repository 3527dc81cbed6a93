"""The chain index: a deleted or stale index is rebuilt or caught up to the state a full replay
of the chain gives, and an index that disagrees with the chain is never trusted."""

from __future__ import annotations

import hashlib
import logging
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.device import chain_index
from agent.device.chain_index import INDEX_NAME, ChainIndex
from agent.device.enrollment import rotate
from agent.device.offload.custody import Ledger
from agent.evidence.chain import Chain
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.store import Store
from agent.evidence.verify import verify_tail
from hal.clock import SimulatedClock

TABLES = ("lines", "files", "reports", "open_recordings", "unexplained", "rotations", "meta")


def open_chain(folder: Path) -> Chain:
    folder.mkdir(parents=True, exist_ok=True)
    return Chain(folder / "chain.jsonl", Ed25519PrivateKey.generate(),
                 lambda: ("DEV-1", "OFC-1"), SimulatedClock().state, "boot-1")


def seal(chain: Chain, name: str, recording: int | None = None) -> dict[str, Any]:
    data = name.encode()
    kind = "segment_sealed" if recording is not None else "voice_note"
    extra = {"recording": recording} if recording is not None else {
        "interruption": None, "explained": False}
    return chain.append(kind, {"file": f"sealed/{name}", "size": len(data),
                               "sha256": hashlib.sha256(data).hexdigest(), **extra})


def a_day(chain: Chain, day: int) -> None:
    """A day's records of every kind the index derives state from."""
    chain.append("boot", {"day": day})
    start = chain.append("record_start", {"trigger": "button"})["seq"]
    files = [seal(chain, f"{start + n + 1:08d}.ts", start) for n in range(3)]
    chain.append("record_stop", {"recording": start, "segments": 3})
    gap = chain.append("interruption", {"cause": "camera_fault"})["seq"]
    note = chain.append("voice_note", {"file": "sealed/x.wav", "size": 1, "sha256": "0" * 64,
                                       "interruption": gap, "explained": day % 2 == 0})
    files.append(note)
    held = [{"seq": f["seq"], "file": f["payload"]["file"], "sha256": f["payload"]["sha256"],
             "size": f["payload"]["size"]} for f in files[:2]]
    custody = chain.append("custody", {"report_id": f"report-{day:04d}", "head": {
        "seq": chain.head.seq, "hash": chain.head.hash}, "segments": held})["seq"]
    chain.append("purge", {"files": [{**held[0], "custody": custody}]})
    chain.append("officer_assigned", {"officer": f"OFC-{day}"})
    chain.append("shutdown", {"reason": "SIGTERM"})


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the index holds, read beside it."""
    with sqlite3.connect(path) as db:
        return {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
                for table in TABLES}


def replayed(chain: Path, tmp_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The state a full replay of the chain gives: a new index of a copy of it."""
    folder = tmp_path / "replay"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    shutil.copy(chain, folder / "chain.jsonl")
    ChainIndex.open(folder / "chain.jsonl").close()
    return snapshot(folder / INDEX_NAME)


def build(folder: Path) -> Chain:
    """Three days, and a recording left open as a power cut leaves it."""
    chain = open_chain(folder)
    for day in range(3):
        a_day(chain, day)
    chain.append("record_start", {"trigger": "button"})
    return chain


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Chain]:
    chain = build(tmp_path / "store")
    yield chain
    chain.close()


def test_an_index_kept_as_the_chain_grows_is_a_full_replay(store: Chain, tmp_path: Path) -> None:
    chain_path = tmp_path / "store" / "chain.jsonl"
    index = ChainIndex.open(chain_path)
    for day in range(3, 5):
        a_day(store, day)
        index.catch_up()
    index.close()
    assert snapshot(tmp_path / "store" / INDEX_NAME) == replayed(chain_path, tmp_path)


def test_deleted_or_stale_index_is_rebuilt_or_caught_up_to_the_replayed_state(
        store: Chain, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    chain_path = tmp_path / "store" / "chain.jsonl"
    index_path = tmp_path / "store" / INDEX_NAME
    ChainIndex.open(chain_path).close()
    stale = tmp_path / "stale.sqlite"
    shutil.copy(index_path, stale)
    a_day(store, 9)  # records the stale index has not seen

    index_path.unlink()
    ChainIndex.open(chain_path).close()
    assert snapshot(index_path) == replayed(chain_path, tmp_path)

    shutil.copy(stale, index_path)
    with caplog.at_level(logging.WARNING):
        ChainIndex.open(chain_path).close()
    assert "rebuilt" not in caplog.text, "a stale index of this chain is caught up, not rebuilt"
    assert snapshot(index_path) == replayed(chain_path, tmp_path)


def edit_meta(path: Path, key: str, value: Any) -> None:
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))


def test_an_index_that_disagrees_with_the_chain_is_never_trusted(
        store: Chain, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    chain_path = tmp_path / "store" / "chain.jsonl"
    index_path = tmp_path / "store" / INDEX_NAME
    ChainIndex.open(chain_path).close()
    truth = replayed(chain_path, tmp_path)

    def reopened() -> dict[str, list[tuple[Any, ...]]]:
        with caplog.at_level(logging.WARNING):
            ChainIndex.open(chain_path).close()
        assert "rebuilt from the chain" in caplog.text
        caplog.clear()
        return snapshot(index_path)

    edit_meta(index_path, "last_hash", "f" * 64)                      # edited
    assert reopened() == truth
    edit_meta(index_path, "end", chain_path.stat().st_size - 1)       # its offset, edited
    assert reopened() == truth
    index_path.write_bytes(b"not a database")                         # garbage
    assert reopened() == truth

    build(tmp_path / "other").close()                    # another store's, as long, alike
    ChainIndex.open(tmp_path / "other" / "chain.jsonl").close()
    shutil.copy(tmp_path / "other" / INDEX_NAME, index_path)
    assert reopened() == truth


def test_an_index_pointing_past_a_truncation_is_rebuilt(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    chain_path = tmp_path / "store" / "chain.jsonl"
    index_path = tmp_path / "store" / INDEX_NAME
    build(tmp_path / "store").close()
    ChainIndex.open(chain_path).close()
    data = chain_path.read_bytes()
    chain_path.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1])  # the last record gone
    with caplog.at_level(logging.WARNING):
        index = ChainIndex.open(chain_path)
    assert "truncated or replaced" in caplog.text
    assert index.meta("end") == chain_path.stat().st_size
    assert not index.start_records(tmp_path / "store" / "sealed"), \
        "the open recording was in the records cut off"
    index.close()
    assert snapshot(index_path) == replayed(chain_path, tmp_path)

    # Cut further back and grown again past the old offset with other records: the index
    # of the first growth names a record the chain no longer holds there.
    ChainIndex.open(chain_path).close()
    chain_path.write_bytes(data[: len(data) // 2][: data[: len(data) // 2].rfind(b"\n") + 1])
    regrown = Chain(chain_path, Ed25519PrivateKey.generate(), lambda: ("DEV-1", "OFC-2"),
                    SimulatedClock().state, "boot-2")
    while chain_path.stat().st_size <= len(data):
        regrown.append("alarm", {"alarm": "hot", "raised": True, "value": "x" * 200})
    regrown.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ChainIndex.open(chain_path).close()
    assert "rebuilt from the chain" in caplog.text
    assert snapshot(index_path) == replayed(chain_path, tmp_path)


def test_a_purge_rests_on_the_custody_record_not_on_the_index(store: Chain,
                                                               tmp_path: Path) -> None:
    """An index edited to put a file in custody that no custody record holds: the ledger
    reports it as purgeable, but the chain itself does not confirm it, so it is not purged."""
    index = ChainIndex.open(tmp_path / "store" / "chain.jsonl")
    ledger = Ledger(index)
    outstanding = ledger.outstanding()
    assert outstanding, "the fixture leaves files outside custody"
    custody_seq = ledger.custody[ledger.purgeable()[0].seq]
    with sqlite3.connect(tmp_path / "store" / INDEX_NAME) as db:
        db.execute("UPDATE files SET custody = ? WHERE seq = ?", (custody_seq,
                                                                  outstanding[0].seq))
    lied = [f for f in ledger.purgeable() if f.seq == outstanding[0].seq]
    assert lied, "the edited index calls the file in custody"
    confirmed = ledger.custody_confirmed(ledger.purgeable())
    assert outstanding[0].seq not in {f.seq for f in confirmed}
    assert confirmed, "files the custody record does hold are still confirmed"
    index.close()


def test_the_ledger_answers_from_the_index_what_it_read_from_the_chain(store: Chain,
                                                                       tmp_path: Path) -> None:
    ledger = Ledger(ChainIndex.open(tmp_path / "store" / "chain.jsonl"))
    head = store.head
    assert ledger.hashes.get(head.seq) == head.hash
    custody = ledger.custody_lines[ledger.custody[ledger.purgeable()[0].seq]]
    assert b'"type":"custody"' in custody and custody.endswith(b"\n")
    assert "report-0001" in ledger.report_ids and "report-0099" not in ledger.report_ids
    assert ledger.officer == "OFC-2"
    store.append("officer_assigned", {"officer": "OFC-9"})
    assert ledger.refresh().officer == "OFC-9"


class Stopped(Exception):
    """systemd's start timeout, in the middle of a first start's indexing."""


def test_a_first_indexing_stopped_midway_goes_on_from_there(
        store: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(chain_index, "BATCH_LINES", 7)
    chain_path = tmp_path / "store" / "chain.jsonl"
    seen: list[tuple[int, int]] = []

    def stop_after_two(done: int, size: int) -> None:
        seen.append((done, size))
        if len(seen) == 2:
            raise Stopped

    with pytest.raises(Stopped):
        ChainIndex.open(chain_path, progress=stop_after_two)
    assert seen[0][0] < seen[1][0] < seen[1][1] == chain_path.stat().st_size
    with caplog.at_level(logging.INFO):
        index = ChainIndex.open(chain_path, progress=lambda *_: None)
    assert "rebuilt" not in caplog.text and "built" not in caplog.text, \
        "the batches committed before the stop are kept"
    assert index.meta("lines") == len(chain_path.read_bytes().splitlines())
    index.close()
    assert snapshot(tmp_path / "store" / INDEX_NAME) == replayed(chain_path, tmp_path)


def test_the_chain_from_line_n_is_the_journal_byte_for_byte(store: Chain,
                                                           tmp_path: Path) -> None:
    chain_path = tmp_path / "store" / "chain.jsonl"
    index = ChainIndex.open(chain_path)
    data = chain_path.read_bytes()
    lines = data.splitlines(keepends=True)
    for first in (1, 2, len(lines) // 2, len(lines), len(lines) + 1, len(lines) + 50):
        start, end = index.span_from(first)
        assert data[start:end] == b"".join(lines[first - 1:]), first
    assert b"".join(index.lines_after(len(lines) - 3)) == b"".join(lines[-3:])
    with chain_path.open("ab") as f:
        f.write(b'{"torn":')  # being written: not served until whole
    assert index.span_from(1) == (0, len(data))
    index.close()


def test_the_self_check_verifies_a_tail_signed_after_a_key_rotation(tmp_path: Path) -> None:
    """The tail's key comes from the rotations before it, which the index finds without
    reading the journal; given none, the first key does not verify the tail."""
    store = Store(tmp_path / "store").prepare()
    key = load_or_create_device_key(store.keys)
    chain = Chain(store.chain, key, lambda: ("DEV-1", "OFC-1"), SimulatedClock().state, "b")
    for n in range(5):
        chain.append("alarm", {"alarm": "hot", "raised": True, "value": str(n)})
    rotate(store.keys, chain, key, "DEV-1", "test")
    for n in range(5):
        chain.append("alarm", {"alarm": "hot", "raised": False, "value": str(n)})
    chain.close()
    index = ChainIndex.open(store.chain)
    tail, before = index.tail(3)
    assert [n for n, _ in tail] == [9, 10, 11] and [n for n, _ in before] == [8]
    report = verify_tail(store.root, tail, before, index.rotation_lines(tail[0][0]))
    assert report.ok and report.records == 3, report.summary()
    assert not verify_tail(store.root, tail, before, []).ok
    index.close()
