"""The device's custody nonces: each handed to one dock certificate, kept in that dock's own
slots, spendable once by that dock alone, and gone after NONCE_TTL_S."""

from __future__ import annotations

import pytest

from agent.device.offload import custody
from agent.device.offload.custody import MAX_DOCKS, NONCES_PER_DOCK, Nonces

A, B = "a" * 64, "b" * 64


def test_a_nonce_is_spent_once_and_only_by_its_dock() -> None:
    nonces = Nonces()
    issued = nonces.issue(A)
    assert not nonces.spend(issued, B)      # another dock's try neither spends nor burns it
    assert nonces.spend(issued, A)
    assert not nonces.spend(issued, A)      # once


def test_asking_evicts_only_the_askers_own_nonces() -> None:
    nonces = Nonces()
    of_a = nonces.issue(A)
    of_b = [nonces.issue(B) for _ in range(NONCES_PER_DOCK * 10)]
    assert nonces.spend(of_a, A)
    assert not nonces.spend(of_b[0], B)     # B's own oldest went
    assert nonces.spend(of_b[-1], B)


def test_a_full_table_evicts_the_dock_least_recently_served() -> None:
    nonces = Nonces()
    of_a = nonces.issue(A)
    others = [nonces.issue(f"{n:064x}") for n in range(MAX_DOCKS - 1)]
    newest = nonces.issue(B)                # one dock too many: A asked longest ago
    assert not nonces.spend(of_a, A)
    assert nonces.spend(others[0], f"{0:064x}") and nonces.spend(newest, B)


def test_a_nonce_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(custody.time, "monotonic", lambda: now[0])
    nonces = Nonces()
    issued = nonces.issue(A)
    now[0] += custody.NONCE_TTL_S + 1
    assert not nonces.spend(issued, A)
