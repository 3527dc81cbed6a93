"""The durable outbox alone: order, survival, the overflow policy, catching up from the chain."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.device.chain_index import ChainIndex
from agent.device.telemetry.outbox import Outbox
from agent.evidence.chain import Chain, read_records, record_hash, split_line
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.store import Store
from hal.clock import SimulatedClock

LIMIT = 1000


def open_chain(root: Path) -> Chain:
    store = Store(root).prepare()
    return Chain(store.chain, load_or_create_device_key(store.keys), lambda: ("DEV-1", "OFC"),
                 SimulatedClock().state, "boot-1")


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    chain = open_chain(tmp_path / "store")
    yield chain
    chain.close()


def events(outbox: Outbox) -> list[dict]:
    """What the outbox holds, read beside it (take() would mark it as handed out)."""
    with sqlite3.connect(outbox.path) as db:
        return [json.loads(body) for (body,) in db.execute("SELECT body FROM events ORDER BY id")]


def test_events_are_in_chain_order_and_survive_a_reopen(chain: Chain, tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", "DEV-1", LIMIT)
    outbox.catch_up(ChainIndex.open(tmp_path / "store/chain.jsonl").lines_after, 0)
    chain.listeners.append(outbox.add_record)
    bodies = [chain.append("alarm", {"alarm": "x", "n": n}) for n in range(5)]
    first = outbox.take(2, after=0)
    outbox.remove([first[0][0]])
    outbox.close()

    reopened = Outbox(tmp_path / "outbox.sqlite", "DEV-1", LIMIT)
    got = events(reopened)
    assert [e["seq"] for e in got] == [b["seq"] for b in bodies[1:]]
    assert got[0]["id"] == f"DEV-1:{bodies[1]['seq']}:{chain_hash(tmp_path, 2)[:16]}"
    assert got[0]["hash"] == chain_hash(tmp_path, 2) and got[0]["prev"] == bodies[1]["prev"]
    assert len(reopened) == 4, "only the acknowledged event is gone"


def chain_hash(tmp_path: Path, line: int) -> str:
    """The SHA-256 of the signed bytes of the journal's `line` (1-based)."""
    return record_hash(split_line(dict(read_records(tmp_path / "store/chain.jsonl"))[line])[0])


def test_full_outbox_drops_routine_events_first_and_counts_them(chain: Chain,
                                                                tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", "DEV-1", LIMIT)
    outbox.catch_up(ChainIndex.open(tmp_path / "store/chain.jsonl").lines_after, 0)
    chain.listeners.append(outbox.add_record)
    for n in range(LIMIT):  # every tenth is an alarm, the rest routine
        chain.append("alarm" if n % 10 == 0 else "segment_sealed", {"n": n})
    in_flight = outbox.take(5, after=0)           # handed to the publisher: never dropped
    for n in range(300):
        chain.append("segment_sealed", {"n": LIMIT + n})

    got = events(outbox)
    assert len(outbox) == len(got) == LIMIT
    assert [e["seq"] for e in got[:5]] == [json.loads(b)["seq"] for _, b in in_flight]
    marker = [e for e in got if e["type"] == "outbox_overflow"]
    assert len(marker) == 1, "one overflow event counts every drop until it is sent"
    assert marker[0]["id"] == "DEV-1:overflow:1"
    assert marker[0]["payload"]["dropped"] == 301  # 300 more events, and the marker's own room
    assert marker[0]["payload"]["types"] == {"segment_sealed": 301}
    alarms = [e for e in got if e["type"] == "alarm"]
    assert len(alarms) == LIMIT // 10, "no alarm is dropped while routine events remain"
    seqs = [e["seq"] for e in got if e["seq"] is not None]
    assert seqs == sorted(seqs), "still in chain order"
    assert marker[0]["payload"]["first_seq"] == 6, "the oldest routine event not in flight"
    assert got.index(marker[0]) == 5, "the overflow event stands where the first drop stood"

    # Once the overflow event has gone out, further drops open a new one.
    outbox.take(6, after=0)
    chain.append("segment_sealed", {"n": -1})
    after = events(outbox)
    assert len(after) == LIMIT and after[-1]["seq"] == chain.head.seq
    assert [e["id"] for e in after if e["type"] == "outbox_overflow"] == [
        "DEV-1:overflow:1", "DEV-1:overflow:2"]


def test_catch_up_sends_what_the_outbox_missed_and_no_history(tmp_path: Path) -> None:
    chain = open_chain(tmp_path / "store")
    for n in range(3):
        chain.append("boot", {"n": n})              # before telemetry was on: not sent
    outbox = Outbox(tmp_path / "outbox.sqlite", "DEV-1", LIMIT)
    assert outbox.catch_up(ChainIndex.open(tmp_path / "store/chain.jsonl").lines_after,
                           chain.head.seq) == 0
    chain.listeners.append(outbox.add_record)
    chain.append("record_start", {})
    outbox.close()
    chain.listeners.clear()                         # the power cut took the outbox's commits
    chain.append("segment_sealed", {})
    chain.append("record_stop", {})
    head = chain.head.seq
    chain.close()

    reopened = Outbox(tmp_path / "outbox.sqlite", "DEV-1", LIMIT)
    index = ChainIndex.open(tmp_path / "store/chain.jsonl")
    assert reopened.catch_up(index.lines_after, head) == 2
    assert [(e["seq"], e["type"]) for e in events(reopened)] == [
        (4, "record_start"), (5, "segment_sealed"), (6, "record_stop")]
    assert reopened.catch_up(index.lines_after, head) == 0


def test_a_failing_listener_does_not_fail_the_append(chain: Chain) -> None:
    def broken(body: dict, hash_: str) -> None:
        raise RuntimeError("disk full")

    chain.listeners.append(broken)
    body = chain.append("boot", {})
    assert chain.head.seq == body["seq"] == 1
