"""Tampered copies of a store, each with the verdict a verifier must reach: the corpus of the
mutation tests, for `bodycam verify` (tests/evidence/test_mutants.py,
tests/system/test_mutants_dock.py) and for the shell procedure of docs/chain-format.md.

`mutants(store, work, other=..., dock=...)` yields a `Mutant` per case, the same cases in
the same order on every run (a fixed seed):

- `path`: the tampered copy (a store, or a dock's device folder), made under `work`; it
  stays until the next case is asked for, then is removed;
- `verdict`: "ok" or "fail";
- `names`: for "fail", words of which at least one must appear in what the verifier says
  (the record, "record 5" or "line 5"; the file, "sealed/00000005.ts"; the witness,
  "receipts/00000013-custody.jsonl", "manifest.json", "--head");
- `args`: what the verifier is given besides the path: `--head SEQ:HASH`, `--receipt
  FILE`, `--key FILE` (a file under `work`, outside the copy);
- `shell`: the verdict of the shell procedure (given `--key` as `PUB` and `--head` as
  `WITNESS`, which is all it takes): the same as `verdict`, or `OK` where the change is one
  only `bodycam verify` checks (canonical form, references, totals), or `SIGNATURE` where
  only a stored signature changed and its record is intact: that passes the procedure by
  default and fails its optional step 6 (every record's own signature).

The classes: sealed files flipped, cut, extended, emptied, deleted, swapped, duplicated,
planted (hidden too) and spliced from `other`; journal lines cut, flipped, deleted,
duplicated, reordered, respelled, given CRLF or a blank line, spliced from `other`, the
final newline dropped; the newest records removed with their files (tail rollback: it
passes with no witness, fails against the head as witnessed); records edited and the
chain re-signed with the store's own key (what a device bug could write: a file outside
sealed/, a custody head not in the chain, a recording's first segment gone, wrong
record_stop totals, a boot record naming another key, dangling references, unknown
types, floats, a malformed wall, unknown fields, a size as a string, deep nesting); the
chain re-signed with another key (passes alone, fails against the device's key); and
benign changes that must pass (two byte-identical sealed files among them). With `dock`,
a dock's device folder: receipts and manifest edited or removed, rollbacks with and
without them. Re-signing needs the store's private key (keys/device.key), which a
simulated device leaves in its store.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.evidence.chain import (
    SEALED_FILE_TYPES,
    canonical,
    encode_line,
    record_hash,
    split_line,
)
from agent.evidence.keys import fingerprint, load_or_create_device_key, public_pem

OK, FAIL = "ok", "fail"
SIGNATURE = "fails only every record's own signature"  # the shell procedure's step 6
_STANDARD_SIG = re.compile(rb',"sig":"[A-Za-z0-9+/]{85}[AQgw]=="}\n$')
_SKIP = ("control.sock", "reserve", "sim")  # not evidence: the daemon's socket, reserve, sim state


@dataclass(frozen=True)
class Mutant:
    name: str
    path: Path
    verdict: str
    names: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    shell: str = ""


Mutate = Callable[[Path], Any]  # changes the copy; a tuple it returns is the verifier's args


@dataclass(frozen=True)
class _Case:
    name: str
    verdict: str
    names: tuple[str, ...]
    mutate: Mutate
    shell: str = ""  # the shell procedure's verdict, when not `verdict`


def mutants(store: Path, work: Path, other: Path | None = None,
            dock: Path | None = None) -> Iterator[Mutant]:
    """Every case, each on a fresh copy of its source (the store, or `dock`)."""
    work.mkdir(parents=True, exist_ok=True)
    yield from _made(store, _store_cases(store, work, other), work, "store")
    if dock is not None:
        yield from dock_mutants(dock, work)


def dock_mutants(dock: Path, work: Path) -> Iterator[Mutant]:
    """The cases of a dock's device folder alone."""
    work.mkdir(parents=True, exist_ok=True)
    yield from _made(dock, _dock_cases(dock), work, "dock")


def _made(source: Path, cases: list[_Case], work: Path, prefix: str) -> Iterator[Mutant]:
    for number, case in enumerate(cases, 1):
        copy = work / f"{prefix}-{number:04d}"
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns(*_SKIP))
        _writable(copy)
        done = case.mutate(copy)
        args = done if isinstance(done, tuple) and all(isinstance(a, str) for a in done) \
            else ()  # a lambda returns what it calls; only a tuple of words is arguments
        yield Mutant(case.name, copy, case.verdict, case.names, args,
                     case.shell or case.verdict)
        _writable(copy)
        shutil.rmtree(copy)


def _writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o700 if path.is_dir() else 0o600)


class Base:
    """What the cases are built from: the source's lines, records and sealed files."""

    def __init__(self, store: Path) -> None:
        self.lines = (store / "chain.jsonl").read_bytes().splitlines(keepends=True)
        self.bodies = [json.loads(split_line(line.rstrip(b"\n"))[0]) for line in self.lines]
        self.sealed = [b for b in self.bodies if b["type"] in SEALED_FILE_TYPES]
        self.files = [b["payload"]["file"] for b in self.sealed]
        last = split_line(self.lines[-1].rstrip(b"\n"))[0]
        self.head = (self.bodies[-1]["seq"], record_hash(last))

    def seqs(self, kind: str) -> list[int]:
        return [b["seq"] for b in self.bodies if b["type"] == kind]


def _store_cases(store: Path, work: Path, other: Path | None) -> list[_Case]:
    base = Base(store)
    rng = random.Random(20)
    cases = [_Case("untouched", OK, (), _nothing)]
    cases += _file_cases(base, rng, other)
    cases += _line_cases(base, rng, other)
    cases += _rollback_cases(base)
    cases += _resigned_cases(base)
    cases += _retention_cases(base)
    cases += _other_key_cases(base, store, work)
    cases += _benign_cases(base)
    return cases


def _nothing(copy: Path) -> None:
    return None


# Sealed files -----------------------------------------------------------------------------

def _file_cases(base: Base, rng: random.Random, other: Path | None) -> list[_Case]:
    cases = []
    for file in base.files:
        names = (file,)
        for where in ("first", "middle", "last", "random"):
            cases.append(_Case(f"{file}: a byte flipped ({where})", FAIL, names,
                               _flip_file(file, where, rng.random())))
        cases += [
            _Case(f"{file}: the last byte cut", FAIL, names, _cut_file(file, lambda n: n - 1)),
            _Case(f"{file}: cut to half", FAIL, names, _cut_file(file, lambda n: n // 2)),
            _Case(f"{file}: emptied", FAIL, names, _cut_file(file, lambda n: 0)),
            _Case(f"{file}: a byte appended", FAIL, names,
                  lambda c, f=file: _append(c / f, b"\0")),
            _Case(f"{file}: deleted", FAIL, names, lambda c, f=file: (c / f).unlink()),
            _Case(f"{file}: a folder in its place", FAIL, names, _folder_for(file)),
            _Case(f"{file}: renamed to .age", FAIL, names,
                  lambda c, f=file: (c / f).rename(c / (f + ".age"))),
        ]
        if other is not None:
            spliced = _other_file(other)
            if spliced is not None:
                cases.append(_Case(f"{file}: replaced by another store's file", FAIL, names,
                                   lambda c, f=file, s=spliced: _put(c / f, s.read_bytes())))
    for first, second in zip(base.files, base.files[1:], strict=False):
        cases.append(_Case(f"{first} and {second} swapped", FAIL, (first, second),
                           _swap(first, second)))
    if base.files:
        first = base.files[0]
        planted = f"sealed/{base.head[0] + 1:08d}{Path(first).suffix}"
        cases += [
            _Case(f"{first} copied as sealed/99999999.ts", FAIL, ("sealed/99999999.ts",),
                  lambda c, f=first: shutil.copy(c / f, c / "sealed/99999999.ts")),
            _Case(f"{first} copied as the next record's file", FAIL, (planted,),
                  lambda c, f=first, p=planted: shutil.copy(c / f, c / p)),
            _Case("a hidden file planted in sealed/", FAIL, ("sealed/.hidden",),
                  lambda c, f=first: shutil.copy(c / f, c / "sealed/.hidden")),
        ]
    return cases


def _flip_file(file: str, where: str, fraction: float) -> Mutate:
    def mutate(copy: Path) -> None:
        path = copy / file
        data = bytearray(path.read_bytes())
        at = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}.get(
            where, int(fraction * (len(data) - 1)))
        data[at] ^= 0x01
        path.write_bytes(bytes(data))
    return mutate


def _cut_file(file: str, length: Callable[[int], int]) -> Mutate:
    def mutate(copy: Path) -> None:
        path = copy / file
        data = path.read_bytes()
        path.write_bytes(data[: length(len(data))])
    return mutate


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def _put(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _folder_for(file: str) -> Mutate:
    def mutate(copy: Path) -> None:
        (copy / file).unlink()
        (copy / file / "inside").mkdir(parents=True)
    return mutate


def _swap(first: str, second: str) -> Mutate:
    def mutate(copy: Path) -> None:
        a, b = copy / first, copy / second
        data = a.read_bytes()
        a.write_bytes(b.read_bytes())
        b.write_bytes(data)
    return mutate


def _other_file(other: Path) -> Path | None:
    files = sorted((other / "sealed").glob("*"))
    return files[0] if files else None


# Journal lines ----------------------------------------------------------------------------

def _line_cases(base: Base, rng: random.Random, other: Path | None) -> list[_Case]:
    cases = []
    count = len(base.lines)
    for index, line in enumerate(base.lines):
        seq = index + 1
        names = (f"record {seq}", f"line {seq}")
        around = (*names, f"record {seq + 1}", f"line {seq + 1}", f"record {seq - 1}",
                  f"line {seq - 1}")
        for at in sorted(rng.sample(range(len(line) - 1), 4)):
            flip = _flip(at, 1 << (at % 7))
            shell = SIGNATURE if seq < count and _signature_only(line, flip(line)) else FAIL
            cases.append(_Case(f"line {seq}: bit {at % 7} of byte {at} flipped", FAIL, names,
                               _edit_line(index, flip), shell))
        if seq in (1, (count + 1) // 2, count):
            at = line.rindex(b'"sig":"') + 7 + 10  # a character well inside the base64
            char = b"B" if line[at:at + 1] == b"A" else b"A"
            cases.append(_Case(f"line {seq}: a character of its signature changed, still "
                               "standard base64", FAIL, names,
                               _edit_line(index, lambda b, a=at, c=char: b[:a] + c + b[a + 1:]),
                               SIGNATURE if seq < count else FAIL))
        cases += [
            _Case(f"line {seq}: cut in half", FAIL, names,
                  _edit_line(index, lambda b: b[: len(b) // 2] + b"\n")),
            _Case(f"line {seq}: signature re-spelled", FAIL, names,
                  _edit_line(index, _respell)),
            _Case(f"line {seq}: CRLF", FAIL, names,
                  _edit_line(index, lambda b: b[:-1] + b"\r\n")),
            _Case(f"line {seq}: duplicated", FAIL, around,
                  _edit_line(index, lambda b: b + b)),
            _Case(f"line {seq}: a blank line after it", FAIL, around,
                  _edit_line(index, lambda b: b + b"\n")),
        ]
        if seq < count:
            cases += [
                _Case(f"line {seq}: deleted", FAIL, (*around, *_files_of(base, seq)),
                      _edit_lines(lambda ls, i=index: ls[:i] + ls[i + 1:])),
                _Case(f"lines {seq} and {seq + 1} swapped", FAIL, around,
                      _edit_lines(lambda ls, i=index: [*ls[:i], ls[i + 1], ls[i], *ls[i + 2:]])),
            ]
        if other is not None:
            theirs = (other / "chain.jsonl").read_bytes().splitlines(keepends=True)
            if index < len(theirs):
                cases.append(_Case(f"line {seq}: replaced by another store's line {seq}", FAIL,
                                   around, _edit_line(index, lambda b, t=theirs[index]: t)))
    cases += [
        _Case("the final newline dropped", FAIL, (f"record {count}", f"line {count}"),
              lambda c: _put(c / "chain.jsonl", b"".join(base.lines)[:-1])),
        _Case("the chain deleted", FAIL, ("chain.jsonl",),
              lambda c: (c / "chain.jsonl").unlink()),
        _Case("the chain emptied", FAIL, tuple(base.files) or ("chain.jsonl",),
              lambda c: _put(c / "chain.jsonl", b"")),
        _Case("lines moved: the first after the last", FAIL, ("record 1", "line 1"),
              _edit_lines(lambda ls: [*ls[1:], ls[0]])),
    ]
    if other is not None:
        cases.append(_Case("the chain replaced by another store's", FAIL,
                           ("record 1", "line 1", *base.files),
                           lambda c: shutil.copy(other / "chain.jsonl", c / "chain.jsonl")))
    return cases


def _files_of(base: Base, seq: int) -> tuple[str, ...]:
    return tuple(b["payload"]["file"] for b in base.sealed if b["seq"] == seq)


def _edit_line(index: int, edit: Callable[[bytes], bytes]) -> Mutate:
    return _edit_lines(lambda lines: [*lines[:index], edit(lines[index]), *lines[index + 1:]])


def _edit_lines(edit: Callable[[list[bytes]], list[bytes]]) -> Mutate:
    def mutate(copy: Path) -> None:
        chain = copy / "chain.jsonl"
        chain.write_bytes(b"".join(edit(chain.read_bytes().splitlines(keepends=True))))
    return mutate


def _signature_only(line: bytes, edited: bytes) -> bool:
    """Whether `edited` is `line` with another signature in standard base64, its body as
    signed: what only a check of every record's own signature finds."""
    body = line[: line.rindex(b',"sig":"')]
    return edited != line and edited.startswith(body + b',"sig":"') and \
        bool(_STANDARD_SIG.search(edited, len(body)))


def _flip(at: int, bit: int) -> Callable[[bytes], bytes]:
    def edit(line: bytes) -> bytes:
        data = bytearray(line)
        data[at] ^= bit
        return bytes(data)
    return edit


def _respell(line: bytes) -> bytes:
    """The same 64 signature bytes in another base64 spelling (the spare bits)."""
    head, sig = line.rsplit(b'"sig":"', 1)
    last = sig.index(b"=")
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    value = alphabet.index(sig[last - 1 : last])
    return head + b'"sig":"' + sig[: last - 1] + alphabet[value ^ 1 : (value ^ 1) + 1] + \
        sig[last:]


# Tail rollback ----------------------------------------------------------------------------

def _rollback_cases(base: Base) -> list[_Case]:
    """The newest records removed with the files they seal: nothing in the chain vouches for
    them, so without a witness this passes, and against the head as seen it fails."""
    cases = []
    head = f"{base.head[0]}:{base.head[1]}"
    for removed in range(1, min(5, len(base.lines) - 1) + 1):
        rollback = _rollback(base, removed)
        cases += [
            _Case(f"the last {removed} record(s) removed, no witness", OK, (), rollback),
            _Case(f"the last {removed} record(s) removed, --head as published", FAIL,
                  ("--head",), lambda c, r=rollback, h=head: (r(c), ("--head", h))[1]),
        ]
    return cases


def _rollback(base: Base, removed: int) -> Mutate:
    def mutate(copy: Path) -> None:
        (copy / "chain.jsonl").write_bytes(b"".join(base.lines[:-removed]))
        for body in base.bodies[-removed:]:
            if body in base.sealed:
                (copy / body["payload"]["file"]).unlink(missing_ok=True)
    return mutate


# Records edited and re-signed with the store's own key -------------------------------------

# What only `bodycam verify` checks (canonical form, fields, references, totals): the shell
# procedure, as docs/chain-format.md says, passes these.
_NOT_IN_THE_SHELL = OK


def _resigned_cases(base: Base) -> list[_Case]:
    cases = []
    bodies = base.bodies
    segments = [b for b in bodies if b["type"] == "segment_sealed"]
    stops = [b for b in bodies if b["type"] == "record_stop"]
    n = len(bodies)

    def edit(seq: int, path: tuple[Any, ...], value: Any) -> Mutate:
        return _resign_with(lambda bs: [_set(b, path, value) if b["seq"] == seq else b
                                        for b in bs])

    def named(seq: int) -> tuple[str, ...]:
        return (f"record {seq}", f"line {seq}")

    if segments:
        segment = segments[0]
        seq, file = segment["seq"], segment["payload"]["file"]
        for value in ("../keys/device.key", "/etc/passwd", "sealed/../chain.jsonl",
                      f"sealed/{seq + 1:08d}.ts", f"sealed/{seq:08d}.wav", "sealed/x.ts",
                      f"sealed/{seq:08d}.ts/"):
            cases.append(_Case(f"record {seq}: file {value!r}, re-signed", FAIL, named(seq),
                               edit(seq, ("payload", "file"), value)))
        for field, value in (("size", str(segment["payload"]["size"])), ("size", True),
                             ("size", segment["payload"]["size"] + 1), ("size", 1.5),
                             ("sha256", "0" * 64), ("recording", 999_999),
                             ("recording", [segment["payload"]["recording"]]),
                             ("index", segment["payload"]["index"] + 7)):
            names = (*named(seq), file) if field in ("size", "sha256") else \
                (*named(seq), file, *(f"record {s['seq']}" for s in stops))
            cases.append(_Case(f"record {seq}: {field} = {value!r}, re-signed", FAIL, names,
                               edit(seq, ("payload", field), value),
                               "" if field in ("size", "sha256") else _NOT_IN_THE_SHELL))
        later = [s for s in segments if s["payload"]["recording"] ==
                 segment["payload"]["recording"] and s is not segment]
        cases.append(_Case(
            "a recording's first segment gone: its record made an alarm, its file deleted, "
            "re-signed", FAIL,
            (*named(seq), file, *(s["payload"]["file"] for s in later[:1]),
             *(f"stop record {s['seq']}" for s in stops)), _first_segment_gone(segment),
            _NOT_IN_THE_SHELL))
    for stop in stops:
        seq = stop["seq"]
        for field, delta in (("segments", 1), ("segments", -1), ("video_frames", 1),
                             ("audio_packets", 1)):
            if field in stop["payload"]:
                cases.append(_Case(f"record {seq}: {field} off by {delta}, re-signed", FAIL,
                                   (*named(seq), f"stop record {seq}"),
                                   edit(seq, ("payload", field),
                                        stop["payload"][field] + delta), _NOT_IN_THE_SHELL))
        if segments:
            cases.append(_Case(f"record {seq}: last_segment another, re-signed", FAIL,
                               (*named(seq), f"stop record {seq}"),
                               edit(seq, ("payload", "last_segment"),
                                    segments[0]["payload"]["file"] + "x"), _NOT_IN_THE_SHELL))
        cases.append(_Case(f"record {seq}: stops recording 999999, re-signed", FAIL,
                           (*named(seq), f"stop record {seq}"),
                           edit(seq, ("payload", "recording"), 999_999), _NOT_IN_THE_SHELL))
    for boot in base.seqs("boot"):
        cases.append(_Case(f"record {boot}: boot names another key, re-signed", FAIL,
                           named(boot), edit(boot, ("payload", "key_fingerprint"), "0" * 64)))
    target = bodies[-1]["seq"]
    for path, value, what, shell in (
            (("type",), "reboot", "an unknown type", FAIL),
            (("payload", "x"), 1.5, "a float in the payload", _NOT_IN_THE_SHELL),
            (("mono_ns",), 1.5, "a float mono_ns", _NOT_IN_THE_SHELL),
            (("wall",), "2026-11-28 05:25:56Z", "a wall without T and microseconds", FAIL),
            (("wall",), "2026-13-28T05:25:56.095916Z", "a wall in month 13", _NOT_IN_THE_SHELL),
            (("wall",), 1764307556, "a wall as a number", FAIL),
            (("extra",), 1, "a field the format does not have", _NOT_IN_THE_SHELL),
            (("officer",), None, "officer null", _NOT_IN_THE_SHELL)):
        cases.append(_Case(f"record {target}: {what}, re-signed", FAIL, named(target),
                           edit(target, path, value), shell))
    cases.append(_Case(f"record {target}: officer removed, re-signed", FAIL, named(target),
                       _resign_with(lambda bs: [_drop(b, "officer") if b["seq"] == target
                                                else b for b in bs]), _NOT_IN_THE_SHELL))
    for name, raw in (("NaN", b'"x":NaN,'), ("nesting 100000 deep", b'"x":' + b"[" * 100_000
                                               + b"]" * 100_000 + b",")):
        cases.append(_Case(f"record {target}: {name} in the body, re-signed", FAIL,
                           named(target), _resign_with(
                               lambda bs, r=raw: [_raw(b, r) if b["seq"] == target else b
                                                  for b in bs]), _NOT_IN_THE_SHELL))
    template = bodies[-1]
    head_seq, head_hash = base.head
    appended: list[tuple[str, list[dict[str, Any]], str, str]] = [
        ("a custody record naming a head not in the chain",
         [_custody(template, n + 1, {"seq": 1, "hash": "0" * 64}, [])], f"record {n + 1}",
         _NOT_IN_THE_SHELL),
        ("a custody record naming itself as the head",
         [_custody(template, n + 1, {"seq": n + 1, "hash": "0" * 64}, [])], f"record {n + 1}",
         _NOT_IN_THE_SHELL),
        ("a custody record naming a file never sealed",
         [_custody(template, n + 1, {"seq": head_seq, "hash": head_hash},
                   [{"seq": 1, "file": "sealed/00000001.ts", "sha256": "0" * 64, "size": 1}])],
         f"record {n + 1}", _NOT_IN_THE_SHELL),
        ("a purge of a record that seals no file, under custody",
         [_custody(template, n + 1, {"seq": head_seq, "hash": head_hash},
                   [_held(s) for s in base.sealed]),
          _purge(template, n + 2, [{"seq": 1, "file": "sealed/00000001.ts",
                                    "sha256": "0" * 64, "size": 1, "custody": n + 1}])],
         f"record {n + 2}", FAIL),
        ("a voice note for interruption 999999",
         [_record(template, n + 1, "voice_note", {
             "interruption": 999_999, "explained": True, "file": "", "sha256": "",
             "size": 0, "duration_ms": 0, "sample_rate": 48000, "ended_by": "silence"})],
         f"record {n + 1}", FAIL),
        ("a notice for recording 999999",
         [_record(template, n + 1, "notice_played", {"recording": 999_999, "parts": []})],
         f"record {n + 1}", _NOT_IN_THE_SHELL),
        ("a mark on recording 999999",
         [_record(template, n + 1, "mark", {"recording": 999_999, "source": "button"})],
         f"record {n + 1}", _NOT_IN_THE_SHELL),
        ("a mark on a recording already stopped",
         [_record(template, n + 1, "mark", {"recording": base.seqs("record_start")[0],
                                            "source": "button"})],
         f"record {n + 1}", _NOT_IN_THE_SHELL),
        ("a mark without its source",
         [_record(template, n + 1, "mark", {"recording": base.seqs("record_start")[0]})],
         f"record {n + 1}", _NOT_IN_THE_SHELL),
        ("a key rotation to no key",
         [_record(template, n + 1, "key_rotation", {
             "new_public_key": "AAAA", "new_fingerprint": "0" * 64, "reason": "x",
             "old_fingerprint": "0" * 64})], f"record {n + 1}", FAIL),
    ]
    for name, records, where, shell in appended:
        cases.append(_Case(f"{name}, re-signed", FAIL, (where, where.replace("record", "line")),
                           _append_records(records), shell))
    if base.sealed and not base.seqs("custody"):
        sealed = base.sealed[0]
        cases.append(_Case("a purge before any custody, the file deleted, re-signed", FAIL,
                           (f"record {n + 1}", sealed["payload"]["file"]),
                           _purge_without_custody(template, n + 1, sealed)))
    return cases


def _deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _set(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(body))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


def _drop(body: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != field}


def _raw(body: dict[str, Any], inserted: bytes) -> bytes:
    """The body's canonical bytes with `inserted` (a key and value, what canonical JSON
    cannot spell) as its first member."""
    return b"{" + inserted + canonical(body)[1:]


def _record(template: dict[str, Any], seq: int, kind: str,
            payload: dict[str, Any]) -> dict[str, Any]:
    return {**template, "seq": seq, "type": kind, "payload": payload}


def _custody(template: dict[str, Any], seq: int, head: dict[str, Any],
             segments: list[dict[str, Any]]) -> dict[str, Any]:
    return _record(template, seq, "custody", {
        "report_id": f"mutant-{seq}", "operator": "mutant", "head": head, "segments": segments,
        "dock": {"name": "DOCK-M", "certificate_sha256": "0" * 64}})


def _held(sealed: dict[str, Any]) -> dict[str, Any]:
    return {"seq": sealed["seq"], **{k: sealed["payload"][k] for k in ("file", "sha256", "size")}}


def _purge(template: dict[str, Any], seq: int, files: list[dict[str, Any]]) -> dict[str, Any]:
    return _record(template, seq, "purge", {"reason": "policy", "free_bytes": 0, "files": files})


def resign(copy: Path, bodies: list[dict[str, Any] | bytes],
            key: Ed25519PrivateKey | None = None) -> None:
    """The chain rewritten as a device would have: linked and signed, by the store's own key
    unless another is given, a custody record's head following its record's new hash. A
    bytes item is signed as it stands (its prev is not set)."""
    key = key or load_or_create_device_key(copy / "keys")
    prev, lines, renamed = "0" * 64, [], {}
    for body in bodies:
        if isinstance(body, dict):
            renamed.setdefault(body.get("prev"), prev)  # its prev as found: the old hash before
            head = body["payload"].get("head") if body["type"] == "custody" else None
            if isinstance(head, dict) and head.get("hash") in renamed:
                body = _set(body, ("payload", "head", "hash"), renamed[head["hash"]])
            body_bytes = canonical({**body, "prev": prev})
        else:
            body_bytes = body
        lines.append(encode_line(body_bytes, key.sign(body_bytes)))
        prev = record_hash(body_bytes)
    (copy / "chain.jsonl").write_bytes(b"".join(lines))


def _resign_with(edit: Callable[[list[dict[str, Any]]], list[Any]]) -> Mutate:
    def mutate(copy: Path) -> None:
        resign(copy, edit(Base(copy).bodies))
    return mutate


def _append_records(records: list[dict[str, Any]]) -> Mutate:
    return _resign_with(lambda bodies: [*bodies, *records])


def _first_segment_gone(segment: dict[str, Any]) -> Mutate:
    def mutate(copy: Path) -> None:
        (copy / segment["payload"]["file"]).unlink()
        resign(copy, [_record(b, b["seq"], "alarm", {"alarm": "hot", "raised": True,
                                                       "value": "mutant"})
                       if b["seq"] == segment["seq"] else b for b in Base(copy).bodies])
    return mutate


def _purge_without_custody(template: dict[str, Any], seq: int,
                           sealed: dict[str, Any]) -> Mutate:
    def mutate(copy: Path) -> None:
        _append_records([_purge(template, seq, [{**_held(sealed), "custody": None}])])(copy)
        (copy / sealed["payload"]["file"]).unlink()
    return mutate


# Retention in custody records -------------------------------------------------------------

_DAY_S = 86_400
_DAYS = {"standard": 365, "marked": 3650}


def _retention_cases(base: Base) -> list[_Case]:
    """A new recording appended, its one segment (a copy of the first, sealed by its own
    record), and custody records of it, re-signed: what each custody says of how the file
    is kept, against its class in the chain when the custody was sealed (retention.py).
    Only `bodycam verify` reads the class and the archive: the shell procedure passes all."""
    segments = [b for b in base.bodies if b["type"] == "segment_sealed"]
    if not segments:
        return []
    n = len(base.bodies)
    start, segment = n + 1, n + 2
    file = f"sealed/{segment:08d}.ts"
    named = (*(f"record {seq}" for seq in range(n + 3, n + 7)), file)
    marked = [MARK]
    cases = [
        ("a custody after a mark holding its file as standard", FAIL,
         [*marked, kept("standard")]),
        ("a custody holding a file no mark marks as marked", FAIL, [kept("marked")]),
        ("a custody holding a file under a class that is none", FAIL, [kept("forever")]),
        ("a custody after a mark archiving its file for the standard days", FAIL,
         [*marked, kept("marked", 365)]),
        ("a custody archiving a standard file for 30 days", FAIL, [kept("standard", 30)]),
        ("a custody archiving a standard file two days short", FAIL,
         [kept("standard", 363)]),
        ("a custody whose retention_days keep marked files no longer than standard ones",
         FAIL, [*marked, kept("marked", 3650, {"standard": 3650, "marked": 365})]),
        ("a custody after a mark archiving its file for the marked days", OK,
         [*marked, kept("marked", 3650)]),
        ("a custody archiving a standard file for its days, less an hour (a device clock "
         "ahead of the dock's)", OK, [kept("standard", 365 - 1 / 24)]),
        ("a custody after a mark holding its file without a class", OK,
         [*marked, kept(None, 365)]),
        ("a mark after custody: the earlier custody standard, a later one holding the file "
         "as marked", OK, [kept("standard", 365), *marked, kept("marked", 3650)]),
        ("an older custody without retention_days, after a mark", OK,
         [*marked, {**kept("marked", 30), "retention_days": None}]),
        ("a marked file purged after a custody holding it as standard only", FAIL,
         [kept("standard"), *marked, purged("marked")]),
        ("a marked file purged as standard", FAIL,
         [*marked, kept("marked"), purged("standard")]),
        ("a marked file purged after a custody holding it as marked", OK,
         [kept("standard"), *marked, kept("marked"), purged("marked")]),
        ("a file purged before its recording was marked", OK,
         [kept("standard"), purged("standard"), *marked]),
        ("an older purge without a class, of a marked file", OK,
         [*marked, kept(None), purged(None)]),
    ]
    return [_Case(f"{name}, re-signed", verdict, named,
                  kept_after(segments[0], start, segment, steps), _NOT_IN_THE_SHELL)
            for name, verdict, steps in cases]


MARK = ("mark", None)  # a step of `kept_after`: a mark of the new recording


def kept(retention: str | None, days: float | None = None,
         retention_days: dict[str, Any] | None = None) -> dict[str, Any]:
    """A step of `kept_after`: a custody of the new segment, holding it under `retention`
    (None: saying no class) and, with `days`, archiving it until that many days after its
    sealing; `retention_days` as the device seals them (365 and 3650 unless given)."""
    return {"retention": retention, "days": days,
            "retention_days": _DAYS if retention_days is None else retention_days}


def purged(retention: str | None) -> dict[str, Any]:
    """A step of `kept_after`: the segment purged on the strength of the custody before,
    the purge giving it class `retention` (None: none, as older stores), its file deleted."""
    return {"purge": retention}


def kept_after(first: dict[str, Any], start: int, seq: int,
                steps: list[Any]) -> Mutate:
    """A recording `start` with one segment `seq` (the bytes of `first`), then `steps`: a
    mark of it (MARK), or a custody of the segment (`kept`), appended and re-signed."""
    def mutate(copy: Path) -> None:
        bodies = Base(copy).bodies
        template = bodies[-1]
        file = f"sealed/{seq:08d}.ts"
        shutil.copy(copy / first["payload"]["file"], copy / file)
        begun = next(b for b in bodies if b["type"] == "record_start")
        added = [_record(template, start, "record_start", begun["payload"]),
                 _record(template, seq, "segment_sealed", {
                     **first["payload"], "recording": start, "index": 0, "file": file})]
        sealed = added[-1]
        for step in steps:
            number = seq + len(added) - 1
            if step == MARK:
                added.append(_record(template, number, "mark",
                                     {"recording": start, "source": "button"}))
                continue
            if "purge" in step:
                custody = next(b for b in reversed(added) if b["type"] == "custody")
                added.append(_purge(template, number, [{
                    **_held(sealed), "custody": custody["seq"],
                    **({"retention": step["purge"]} if step["purge"] else {})}]))
                (copy / file).unlink()
                continue
            entry = {**_held(sealed), **({"retention": step["retention"]}
                                          if step["retention"] else {})}
            custody = _custody(template, number, {"seq": number - 1, "hash": ""}, [entry])
            if step["retention_days"] is not None:
                custody["payload"]["retention_days"] = step["retention_days"]
            if step["days"] is not None:
                custody["payload"]["archive"] = {
                    "endpoint": "https://s3.example", "bucket": "evidence", "objects": [{
                        "seq": seq, "key": f"agency/{template['device']}/{file}",
                        "version_id": "v1",
                        "retain_until": _after(template["wall"], step["days"])}]}
            added.append(custody)
        resign(copy, [*bodies, *_linked(bodies[-1], added)])
    return mutate


def _after(wall: str, days: float) -> str:
    """`days` after `wall`, as an archive's retain-until (UTC, whole seconds, one on)."""
    moment = datetime.strptime(wall, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return (moment.replace(microsecond=0) + timedelta(seconds=round(days * _DAY_S) + 1)
            ).strftime("%Y-%m-%dT%H:%M:%SZ")


def _linked(last: dict[str, Any], added: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`added` linked after `last` as `resign` signs them, each custody's head the record
    before it with that record's hash."""
    prev, linked = record_hash(canonical(last)), []
    for body in added:
        body = {**body, "prev": prev}
        if body["type"] == "custody":
            body = _set(body, ("payload", "head"), {"seq": linked[-1]["seq"],
                                                    "hash": record_hash(canonical(linked[-1]))})
        linked.append(body)
        prev = record_hash(canonical(body))
    return linked


# Another key ------------------------------------------------------------------------------

def _other_key_cases(base: Base, store: Path, work: Path) -> list[_Case]:
    """The whole chain re-signed with a new key, keys/device.pub replaced: it verifies as it
    must with the key that came with it, and fails against the device's key."""
    device_pub = work / "device-key.pub"
    device_pub.write_bytes((store / "keys" / "device.pub").read_bytes())
    def resign_all(copy: Path) -> None:
        key = Ed25519PrivateKey.generate()
        bodies = [_set(b, ("payload", "key_fingerprint"), fingerprint(key.public_key()))
                  if b["type"] == "boot"
                  else b for b in Base(copy).bodies]
        resign(copy, list(bodies), key)
        (copy / "keys" / "device.pub").write_bytes(public_pem(key.public_key()))
        (copy / "keys" / "device.key").unlink(missing_ok=True)

    def one_record(copy: Path) -> None:
        bodies: list[Any] = Base(copy).bodies
        key = load_or_create_device_key(copy / "keys")
        other = Ed25519PrivateKey.generate()
        prev, lines = "0" * 64, []
        for index, body in enumerate(bodies):
            body_bytes = canonical({**body, "prev": prev})
            signer = other if index == len(bodies) // 2 else key
            lines.append(encode_line(body_bytes, signer.sign(body_bytes)))
            prev = record_hash(body_bytes)
        (copy / "chain.jsonl").write_bytes(b"".join(lines))

    middle = len(base.bodies) // 2 + 1
    return [
        _Case("the chain re-signed with another key, keys/device.pub replaced", OK, (),
              resign_all),
        _Case("the chain re-signed with another key, checked with the device's key", FAIL,
              ("record 1", "line 1"),
              lambda c: (resign_all(c), ("--key", str(device_pub)))[1]),
        _Case(f"record {middle} signed with another key", FAIL,
              (f"record {middle}", f"line {middle}"), one_record, SIGNATURE),
    ]


# Benign ---------------------------------------------------------------------------------

def _benign_cases(base: Base) -> list[_Case]:
    head = f"{base.head[0]}:{base.head[1]}"
    first = base.bodies[0]
    first_hash = record_hash(canonical(first))
    cases = [
        _Case("a file left in open/", OK, (), lambda c: _put(_mkdir(c / "open") / "x.ts", b"x")),
        _Case("a torn tail kept beside the chain", OK, (),
              lambda c: _put(c / "chain.jsonl.torn-1", b'{"seq":')),
        _Case("sealed files made writable and touched", OK, (), _touch_sealed),
        _Case("--head as published", OK, (), lambda c: ("--head", head)),
        _Case("--head of the first record", OK, (), lambda c: ("--head", f"1:{first_hash}")),
        _Case("two byte-identical voice notes and exemptions, re-signed", OK, (),
              _identical_notes()),
        # Payloads are open to fields a later version adds; only the documented ones are read.
        _Case("a payload field the format does not list, nested 200 deep, re-signed", OK, (),
              _resign_with(lambda bs: [*bs[:-1], _set(bs[-1], ("payload", "x"), _deep(200))])),
    ]
    return cases


def _mkdir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


def _touch_sealed(copy: Path) -> None:
    for path in (copy / "sealed").iterdir():
        os.utime(path, (0, 0))


def _silent_wav(seconds: int = 1, rate: int = 16000) -> bytes:
    data = bytes(seconds * rate * 2)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" +
            struct.pack("<I", len(data)) + data)


def _identical_notes() -> Mutate:
    """Silence is silence: two voice notes (and two exemptions) of the same bytes, as two
    silent notes in one shift give; each sealed by its own record, both must verify."""
    def mutate(copy: Path) -> None:
        bodies = Base(copy).bodies
        template, n = bodies[-1], len(bodies)
        wav = _silent_wav()
        interruption = _record(template, n + 1, "interruption", {
            "cause": "officer_stop_restart", "detail": "mutant", "recording_before": None,
            "recording_after": None, "last_segment": None, "start": None,
            "start_mono_ns": None, "start_boot_id": template["boot_id"], "end": template["wall"],
            "end_mono_ns": template["mono_ns"], "ended_by": "button_hold", "explained": False})
        added: list[dict[str, Any]] = [interruption]
        for seq, kind in ((n + 2, "voice_note"), (n + 3, "voice_note"), (n + 4, "exemption"),
                          (n + 5, "exemption")):
            file = f"sealed/{seq:08d}.wav"
            (copy / file).write_bytes(wav)
            payload = {"file": file, "size": len(wav), "sha256": _sha256(wav),
                       "duration_ms": 1000, "sample_rate": 16000, "ended_by": "no_speech",
                       "explained": False}
            if kind == "voice_note":
                payload["interruption"] = n + 1
            added.append(_record(template, seq, kind, payload))
        resign(copy, [*bodies, *added])
    return mutate


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# A dock's device folder -------------------------------------------------------------------

def _dock_cases(dock: Path) -> list[_Case]:
    """A dock's copy: its receipts and manifest witness the head it verified."""
    base = Base(dock)
    receipts = sorted(p.name for p in (dock / "receipts").glob("*"))
    witnesses = ("manifest.json", *(f"receipts/{r}" for r in receipts))
    cases = [_Case("the dock's copy untouched", OK, (), _nothing)]
    for removed in range(1, min(5, len(base.lines) - 1) + 1):
        rollback = _rollback(base, removed)
        cases += [
            _Case(f"the dock's copy: the last {removed} record(s) removed", FAIL, witnesses,
                  rollback),
            _Case(f"the dock's copy: the last {removed} record(s) removed, the receipts "
                  "deleted", FAIL, ("manifest.json",),
                  lambda c, r=rollback: (r(c), shutil.rmtree(c / "receipts"))[0]),
            _Case(f"the dock's copy: the last {removed} record(s) removed, receipts and "
                  "manifest deleted", OK, (),
                  lambda c, r=rollback: (r(c), shutil.rmtree(c / "receipts"),
                                         (c / "manifest.json").unlink())[0]),
        ]
    for receipt in receipts:
        source = f"receipts/{receipt}"
        for at in ("payload", "head", "sig"):
            cases.append(_Case(f"{source}: a byte flipped in its {at}", FAIL, (source,),
                               _flip_receipt(source, at)))
        cases += [
            _Case(f"{source}: deleted", FAIL, ("manifest.json",),
                  lambda c, s=source: (c / s).unlink()),
            _Case(f"{source}: emptied", FAIL, (source,), lambda c, s=source: _put(c / s, b"")),
            _Case(f"{source}: deep nesting", FAIL, (source,),
                  lambda c, s=source: _put(c / s, b"[" * 100_000 + b"\n")),
        ]
    manifest = json.loads((dock / "manifest.json").read_text())
    if manifest.get("head"):
        head = manifest["head"]
        for name, value in (("head seq one on", {**head, "seq": head["seq"] + 1}),
                            ("head hash changed", {**head, "hash": "0" * 64}),
                            ("head a string", "12"), ("head nested 100000 deep", None)):
            cases.append(_Case(f"manifest.json: {name}", FAIL, ("manifest.json",),
                               _edit_manifest(manifest, "head", value, name)))
    cases += [
        _Case("manifest.json: key fingerprint changed", FAIL, ("manifest.json",),
              _edit_manifest(manifest, "key_fingerprint", "0" * 64, "")),
        _Case("manifest.json: not JSON", FAIL, ("manifest.json",),
              lambda c: _put(c / "manifest.json", b"{")),
        _Case("manifest.json: custody_seq of no receipt", FAIL, ("manifest.json",),
              _edit_manifest(manifest, "custody_seq", 999_999, "")),
        _Case("manifest.json: a link to /dev/zero", FAIL, ("manifest.json",), _manifest_to_zero),
        _Case("a FIFO planted in receipts/", FAIL, ("receipts/fifo",),
              lambda c: os.mkfifo(c / "receipts" / "fifo")),
    ]
    for file in base.files[:2]:
        cases.append(_Case(f"the dock's copy: {file} a byte flipped", FAIL, (file,),
                           _flip_file(file, "middle", 0.5)))
    return cases


def _manifest_to_zero(copy: Path) -> None:
    (copy / "manifest.json").unlink()
    (copy / "manifest.json").symlink_to("/dev/zero")


def _flip_receipt(source: str, at: str) -> Mutate:
    def mutate(copy: Path) -> None:
        path = copy / source
        data = bytearray(path.read_bytes())
        index = {"payload": data.find(b'"operator":"') + 13, "head": data.find(b'"head":') + 20,
                 "sig": data.rfind(b'"sig":"') + 12}[at]
        data[index] ^= 0x02
        path.write_bytes(bytes(data))
    return mutate


def _edit_manifest(manifest: dict[str, Any], field: str, value: Any, name: str) -> Mutate:
    def mutate(copy: Path) -> None:
        text = json.dumps({**manifest, field: value})
        if "nested" in name:
            text = text.replace('"head": null', '"head": ' + "[" * 100_000 + "]" * 100_000)
        (copy / "manifest.json").write_text(text)
    return mutate
