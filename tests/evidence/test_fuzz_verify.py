"""`bodycam verify` on hostile stores: "FAIL" and exit 1 (or exit 2 for a key that is not
one), never a traceback or a hang. The dock runs the same verifier on what a device sent,
so a device that signs a malformed record must be refused, not crash the dock's pull.

The corpus is damage done to a real recorded store, from a fixed seed: lines cut and bits
flipped; records edited with and without a fresh signature from the device's own key (its
whole chain re-signed, so that only the edit is wrong); deep nesting, NUL and non-UTF-8 in
lines; files the records point outside sealed/; and folders where files should be.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.evidence.chain import canonical, encode_line, record_hash, split_line
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.verify import verify_store
from tests.support.fuzz import run_cli

Damage = Callable[[Path], None]
HOSTILE: list[Any] = [None, "x", [], {}, -1, 10**30, True, 1.5, [[[]]], "../keys/device.key"]


def _bodies(store: Path) -> list[dict[str, Any]]:
    return [json.loads(split_line(line)[0])
            for line in (store / "chain.jsonl").read_bytes().splitlines()]


def _resign(store: Path, bodies: list[dict[str, Any] | bytes]) -> None:
    """The chain rewritten as the device would have: each record linked and signed with its
    key. A bytes item is a body signed as it stands (what canonical JSON cannot spell)."""
    key = load_or_create_device_key(store / "keys")
    prev, lines = "0" * 64, []
    for body in bodies:
        if isinstance(body, dict):
            body_bytes = canonical({**body, "prev": prev} if "prev" in body else body)
        else:
            body_bytes = body
        lines.append(encode_line(body_bytes, key.sign(body_bytes)))
        prev = record_hash(body_bytes)
    (store / "chain.jsonl").write_bytes(b"".join(lines))


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a record: each key of each object, each item of each list."""
    if path:
        yield path
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else []
    for key, inner in items:
        yield from _leaves(inner, (*path, key))


def _set(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(body))
    target = copy
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return copy


_DELETE = object()


def corpus(base: Path) -> Iterator[tuple[str, Damage, set[int]]]:
    """(name, damage, the exit codes allowed): a few hundred, the same on every run."""
    rng = random.Random(18)
    chain = (base / "chain.jsonl").read_bytes().splitlines(keepends=True)
    bodies = _bodies(base)

    def lines_with(index: int, line: bytes) -> Damage:
        return lambda store: (store / "chain.jsonl").write_bytes(
            b"".join([*chain[:index], line, *chain[index + 1:]]))

    for index, line in enumerate(chain):
        for cut in rng.sample(range(1, len(line) - 1), 4):
            yield f"line {index + 1} cut at {cut}", lines_with(index, line[:cut] + b"\n"), {1}
        for at in rng.sample(range(len(line) - 1), 6):
            flipped = bytearray(line)
            flipped[at] ^= 1 << rng.randrange(7)
            if flipped[at] != ord("\n"):
                yield f"line {index + 1} bit flip at {at}", lines_with(index, bytes(flipped)), {1}
        for name, text in (("NUL", b"\x00"), ("non-UTF-8", b"\xff\xfe"),
                           ("deep nesting", b"[" * 100_000)):
            middle = len(line) // 2
            yield f"line {index + 1} {name}", lines_with(index, line[:middle] + text +
                                                         line[middle:]), {1}
    for name, line in (("array", b"[" * 100_000 + b"]" * 100_000),
                       ("object", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
                       ("signed-looking", b'{"seq":' + b"[" * 100_000 + b',"sig":"AAAA"}'),
                       ("a list", b'[1,"sig":"AAAA"]'), ("a seq of 5000 digits",
                                                        b'{"seq":' + b"9" * 5000 + b"}")):
        yield f"a deeply nested or odd line: {name}", lines_with(len(chain) - 1, line + b"\n"), {1}

    edits = [(i, path) for i, body in enumerate(bodies) for path in _leaves(body)]
    for index, path in rng.sample(edits, min(60, len(edits))):
        for value in rng.sample(HOSTILE, 3):
            edited = _set(bodies[index], path, value)
            where = f"record {index + 1} {'.'.join(map(str, path))} = {value!r}"
            yield f"{where}, re-signed", _resigned([*bodies[:index], edited,
                                                    *bodies[index + 1:]]), {0, 1}
        edited = _set(bodies[index], path, _DELETE)
        yield f"record {index + 1} {'.'.join(map(str, path))} deleted, unsigned", \
            lines_with(index, encode_line(canonical(edited), b"\0" * 64)), {1}
    segment = next(b for b in bodies if b["type"] == "segment_sealed")
    signed_raw = {
        "NaN in a signed record": canonical(segment).replace(b'"size":', b'"size":NaN,"x":'),
        "Infinity in a signed record": canonical(segment).replace(b'"index":',
                                                                  b'"index":1e999,"y":'),
        "deep nesting in a signed record": b'{"seq":9,"payload":' + b"[" * 100_000 + b"}",
        "a duplicate key in a signed record": canonical(segment)[:-1] + b',"seq":1}',
    }
    for name, raw in signed_raw.items():
        yield name, _resigned([*bodies, raw]), {1}
    appended = {
        "a segment outside sealed/": {**segment, "payload": {**segment["payload"],
                                                              "file": "../keys/device.key"}},
        "a segment with fps 0": _set(segment, ("payload", "video", "fps"), 0),
        "a segment of a recording named by a list": _set(segment, ("payload", "recording"), [1]),
        "a custody record of strings": {**segment, "type": "custody",
                                        "payload": {"segments": ["x", 1]}},
        "a purge without custody": {**segment, "type": "purge", "payload": {
            "files": [{"seq": segment["seq"], "sha256": "0", "file": "sealed/x"}]}},
        "a key rotation to no key": {**segment, "type": "key_rotation", "payload": {
            "new_public_key": "AAAA", "new_fingerprint": "x"}},
        "a voice note for a list": {**segment, "type": "voice_note", "payload": {
            **segment["payload"], "interruption": [1], "explained": True}},
        "a stop of a recording never started": {**segment, "type": "record_stop",
                                                "payload": {"recording": 99, "segments": 3}},
    }
    for name, body in appended.items():
        yield name, _resigned([*bodies, {**body, "seq": len(bodies) + 1}]), {1}
    first_segment = segment["payload"]["file"]
    for name, damage in _places(first_segment).items():
        yield name, damage, {1}
    yield "open/ is a file", _file("open"), {0, 1}  # it holds nothing sealed
    yield "the public key is a folder", _folder("keys/device.pub"), {2}
    yield "the public key is garbage", lambda s: (s / "keys/device.pub").write_bytes(
        b"-----BEGIN PUBLIC KEY-----\n\xff\n"), {2}


def _resigned(bodies: list[Any]) -> Damage:
    return lambda store: _resign(store, bodies)


def _folder(name: str) -> Damage:
    def damage(store: Path) -> None:
        path = store / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        (path / "inside").mkdir(parents=True)
    return damage


def _file(name: str) -> Damage:
    def damage(store: Path) -> None:
        shutil.rmtree(store / name)
        (store / name).write_bytes(b"not a folder")
    return damage


def _places(first_segment: str) -> dict[str, Damage]:
    """Folders where files should be, and the other way round."""
    return {"chain.jsonl is a folder": _folder("chain.jsonl"),
            "a sealed segment is a folder": _folder(first_segment),
            "sealed/ is a file": _file("sealed"),
            "chain.jsonl links to itself": _loop("chain.jsonl")}


def _loop(name: str) -> Damage:
    def damage(store: Path) -> None:
        (store / name).unlink()
        (store / name).symlink_to(name)
    return damage


def test_hostile_stores_fail_verification_in_one_line(recorded_store: Path,
                                                      tmp_path: Path) -> None:
    assert verify_store(recorded_store).ok
    failures, cases = [], 0
    for name, damage, codes in corpus(recorded_store):
        store = tmp_path / "store"
        shutil.copytree(recorded_store, store, ignore=shutil.ignore_patterns("control.sock"))
        damage(store)
        ended = run_cli(["verify", str(store)], seconds=20)
        cases += 1
        problem = ended.problem(codes)
        if problem is None and ended.code == 1 and not ended.stdout.startswith("FAIL: "):
            problem = f"exit 1 without a FAIL line: {ended.stdout[:120]!r}"
        if problem:
            failures.append(f"{name}: {problem}")
        shutil.rmtree(store)
    assert cases >= 250
    assert not failures, f"{len(failures)} of {cases} cases:\n" + "\n".join(failures)


@pytest.mark.parametrize("name", ["a segment with fps 0", "deep nesting in a signed record",
                                  "chain.jsonl is a folder"])
def test_a_hostile_store_fails_in_one_line_as_a_process(recorded_store: Path, tmp_path: Path,
                                                        name: str) -> None:
    """A few through a real process: what the investigator's shell sees."""
    damage = next(d for n, d, _ in corpus(recorded_store) if n == name)
    store = tmp_path / "store"
    shutil.copytree(recorded_store, store, ignore=shutil.ignore_patterns("control.sock"))
    damage(store)
    result = subprocess.run([sys.executable, "-m", "agent", "verify", str(store)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("FAIL: ") and result.stderr == "", result.stderr
