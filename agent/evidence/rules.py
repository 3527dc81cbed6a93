"""What the format promises of records beyond their signatures and links.

A device (or whoever holds its key) can sign anything: these are the rules of
docs/chain-format.md that a signed record must still keep, each broken one a
finding that names the record. `record_problem` is what one record says of
itself (a type the format knows, exactly the documented top-level fields, no
number with a fraction, `wall` in the one time format, a sealed file named for
its own record); `key_named` is the key it names against the key that signed it;
`References` is what records say of each other (every seq a record names is a
record of the right kind before it, custody heads are records of this chain).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agent.evidence.chain import SEALED_FILE_TYPES
from agent.evidence.findings import Finding
from agent.evidence.retention import recording_of

RECORD_TYPES = frozenset({
    "boot", "self_check", "record_start", "notice_played", "segment_sealed", "record_stop",
    "interruption", "voice_note", "exemption", "alarm", "command", "remote_commands_refused",
    "custody", "purge", "officer_assigned", "clock_step", "enrollment", "key_rotation",
    "key_repaired", "retirement", "file_recovered", "mark", "photo", "shutdown"})
TOP_FIELDS = frozenset({"boot_id", "clock", "device", "mono_ns", "officer", "payload", "prev",
                        "seq", "type", "wall"})
# The one place a fraction was ever written: chains from before the count became an integer.
_LEGACY_FLOATS = {("remote_commands_refused", ("payload", "seconds"))}
_WALL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
# The extensions each kind of sealed file may have: MPEG-TS segments, WAV notes, JPEG photos,
# age-encrypted.
_SUFFIXES = {"segment_sealed": (".ts", ".ts.age"), "voice_note": (".wav", ".wav.age"),
             "exemption": (".wav", ".wav.age"), "photo": (".jpg", ".jpg.age"),
             "file_recovered": (".ts", ".ts.age", ".wav", ".wav.age", ".jpg", ".jpg.age")}
# Which record a key fingerprint field must name: the key that signed the record.
_KEY_FIELDS = {"boot": "key_fingerprint", "retirement": "key_fingerprint",
               "key_rotation": "old_fingerprint", "key_repaired": "fingerprint"}


def record_problem(body: dict[str, Any], fractions: bool = True) -> str | None:
    """Why a record of the documented shape still breaks the format's rules, or None.

    `body` has an integer seq, a string type and an object payload (checked before);
    `fractions`: False when the parser met no number with a fraction or an exponent in
    it, so that the walk for one can be spared."""
    kind = body["type"]
    if kind not in RECORD_TYPES:
        return f"is of a type the format does not know ({kind!r})"
    fields = set(body)
    if fields != TOP_FIELDS:
        extra, lacking = sorted(fields - TOP_FIELDS), sorted(TOP_FIELDS - fields)
        return "has " + "; ".join(([f"fields the format does not have: {', '.join(extra)}"]
                                   if extra else []) +
                                  ([f"no {', '.join(lacking)}"] if lacking else []))
    for name, wanted in (("boot_id", str), ("device", str), ("officer", str), ("clock", dict)):
        if not isinstance(body[name], wanted):
            return f"{name} is a {type(body[name]).__name__}, not a {wanted.__name__}"
    if type(body["mono_ns"]) is not int:
        return f"mono_ns is a {type(body['mono_ns']).__name__}, not an integer"
    if not _is_wall(body["wall"]):
        return f"wall {str(body['wall'])[:40]!r} is not a UTC time as 2026-11-28T05:25:56.095916Z"
    fraction = _fraction(body) if fractions else None
    if fraction is not None:
        return f"holds a number with a fraction at {fraction} (the format has integers only)"
    if kind in _SUFFIXES:
        name, seq = body["payload"]["file"], body["seq"]
        names = [f"sealed/{seq:08d}{suffix}" for suffix in _SUFFIXES[kind]]
        if name not in names:
            return f"seals {str(name)[:80]!r}, not {' or '.join(names)} (its own seq)"
    return None


def key_named(body: dict[str, Any], key_fingerprint: str) -> str | None:
    """A boot, key_rotation or retirement record that names a key other than its signer's."""
    field = _KEY_FIELDS.get(body["type"])
    if field is None:
        return None
    named = body["payload"].get(field)
    if named == key_fingerprint:
        return None
    return (f"names key {str(named)[:16]}… as its signing key ({field}), but was signed by "
            f"key {key_fingerprint[:16]}…")


def _is_wall(value: Any) -> bool:
    if not isinstance(value, str) or not _WALL.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value[:-1])  # the form is checked above: is it a real time?
    except ValueError:
        return False
    return True


def _fraction(body: dict[str, Any]) -> str | None:
    """Where the first float in a record is ("payload.video.fps"), or None. Walked with a
    stack: a record has passed the JSON parser's own depth limit, but no recursion here."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and (body["type"], path) not in _LEGACY_FLOATS:
            return ".".join(map(str, path))
        if isinstance(value, dict):
            stack.extend(((*path, key), inner) for key, inner in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, index), inner) for index, inner in enumerate(value))
    return None


class References:
    """What records say of each other, read in chain order: each seq a record names is an
    earlier record of the kind the field means, each file it names was sealed before it,
    and the head of each custody record is a record of this chain with that hash.

    A sealed file's facts are kept until a purge closes it (`release`), unless `keep_all`;
    a reference to something no longer kept sets `asked`: the pass's answer is then not
    final, and the verifier reads the chain again keeping all (verify.py). `hashes` holds
    the hashes of the records a custody head may name (the recent ones, or all)."""

    def __init__(self, hashes: Mapping[int, str], keep_all: bool = True) -> None:
        self.hashes = hashes
        self.keep_all = keep_all
        self.asked = False
        self.findings: list[Finding] = []
        self.starts: set[int] = set()
        self._stopped: set[int] = set()
        self._interruptions: set[int] = set()
        self._sealed: dict[int, dict[str, Any]] = {}    # seq -> file, sha256, size
        self._segment_names: set[str] = set()
        self._holders: dict[int, set[int]] = {}         # file seq -> custody seqs holding it

    def take(self, record: dict[str, Any]) -> None:
        seq, kind, payload = record["seq"], record["type"], record["payload"]
        where = f"{kind} record {seq}"
        check = getattr(self, f"_{kind}", None)
        if check is not None:
            check(where, seq, payload)
        if kind == "record_start":
            self.starts.add(seq)
        elif kind == "interruption":
            self._interruptions.add(seq)
        elif kind in SEALED_FILE_TYPES:
            self._sealed[seq] = {**{name: payload[name] for name in ("file", "sha256", "size")},
                                 "recording": recording_of(payload), "wall": record["wall"]}
            if kind == "segment_sealed":
                self._segment_names.add(payload["file"])

    def release(self, seq: int) -> None:
        """A purge closed the file sealed by record `seq`: nothing should name it again."""
        if self.keep_all:
            return
        sealed = self._sealed.pop(seq, None)
        if sealed is not None:
            self._segment_names.discard(sealed["file"])
        self._holders.pop(seq, None)

    def open_files(self) -> dict[int, dict[str, Any]]:
        """seq -> file, sha256, size, recording, wall of each sealed file kept: those no purge
        closed (all, with `keep_all`)."""
        return self._sealed

    def state(self) -> dict[str, Any]:
        """What a later pass needs to go on from here (JSON), for `restore`."""
        return {"starts": sorted(self.starts), "stopped": sorted(self._stopped),
                "interruptions": sorted(self._interruptions),
                "sealed": [[seq, sealed] for seq, sealed in self._sealed.items()],
                "segment_names": sorted(self._segment_names),
                "holders": [[seq, sorted(custody)] for seq, custody in self._holders.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        """Go on from a `state`; KeyError, TypeError or ValueError if it is not one."""
        self.starts = {int(seq) for seq in state["starts"]}
        self._stopped = {int(seq) for seq in state["stopped"]}
        self._interruptions = {int(seq) for seq in state["interruptions"]}
        self._sealed = {int(seq): {"file": str(sealed["file"]),
                                   "sha256": str(sealed["sha256"]), "size": int(sealed["size"]),
                                   "recording": recording_of(sealed),
                                   "wall": str(sealed["wall"])}
                        for seq, sealed in state["sealed"]}
        self._segment_names = {str(name) for name in state["segment_names"]}
        self._holders = {int(seq): {int(c) for c in custody}
                         for seq, custody in state["holders"]}

    def _ask(self) -> None:
        if not self.keep_all:
            self.asked = True

    def _dangling(self, where: str, problem: str) -> None:
        self.findings.append(Finding(where, f"{problem} (a dangling reference)", "dangling"))

    def _recording(self, where: str, field: str, value: Any, optional: bool = False) -> None:
        if optional and value is None:
            return
        if type(value) is not int or value not in self.starts:
            self._dangling(where, f"names recording {value!r} in {field}, which no earlier "
                           "record_start began")

    def _segment_sealed(self, where: str, seq: int, payload: dict[str, Any]) -> None:
        self._recording(where, "recording", payload["recording"])

    def _mark(self, where: str, seq: int, payload: dict[str, Any]) -> None:
        self._recording(where, "recording", payload["recording"])
        if payload["recording"] in self._stopped:
            self._dangling(where, f"marks recording {payload['recording']}, which an earlier "
                           "record_stop ended")

    def _notice_played(self, where: str, seq: int, payload: dict[str, Any]) -> None:
        self._recording(where, "recording", payload.get("recording"))

    def _record_stop(self, where: str, seq: int, payload: dict[str, Any]) -> None:
        self._recording(where, "recording", payload["recording"])
        if payload["recording"] in self._stopped:
            self.findings.append(Finding(where, f"stops recording {payload['recording']} a "
                                         "second time", "inserted"))
        self._stopped.add(payload["recording"])

    def _interruption(self, where: str, seq: int, payload: dict[str, Any]) -> None:
        self._recording(where, "recording_before", payload.get("recording_before"), True)
        self._recording(where, "recording_after", payload.get("recording_after"), True)
        last = payload.get("last_segment")
        if last is not None and (not isinstance(last, str) or last not in self._segment_names):
            if isinstance(last, str):
                self._ask()
            self._dangling(where, f"names last_segment {str(last)[:80]!r}, which no earlier "
                           "record sealed")

    def _voice_note(self, where: str, seq: int, payload: dict[str, Any]) -> None:
        interruption = payload.get("interruption")
        if interruption is not None and interruption not in self._interruptions:
            self._dangling(where, f"explains interruption {interruption!r}, which is no "
                           "earlier interruption record")

    def _photo(self, where: str, seq: int, payload: dict[str, Any]) -> None:
        self._recording(where, "recording", payload["recording"], optional=True)

    def _custody(self, where: str, seq: int, payload: dict[str, Any]) -> None:
        head = payload.get("head")
        head_seq, head_hash = (head.get("seq"), head.get("hash")) if isinstance(head, dict) \
            else (None, None)
        if type(head_seq) is not int or head_seq >= seq or \
                self.hashes.get(head_seq) != head_hash:
            if type(head_seq) is int and head_seq < seq and head_seq not in self.hashes:
                self._ask()
            self._dangling(where, f"names as the head the dock verified {_head_text(head)}, "
                           "which is no earlier record of this chain with that hash")
        for item in payload["segments"]:
            problem = self._names_sealed(item)
            if problem:
                self._dangling(where, f"takes into custody {problem}")
            self._holders.setdefault(item["seq"], set()).add(seq)

    def _purge(self, where: str, seq: int, payload: dict[str, Any]) -> None:
        for item in payload["files"]:
            problem = self._names_sealed(item)
            if problem:
                self._dangling(where, f"deletes {problem}")
            custody = item.get("custody")
            if custody is not None and (type(custody) is not int or
                                        custody not in self._holders.get(item["seq"], ())):
                if item["seq"] not in self._holders:
                    self._ask()
                self._dangling(where, f"says custody record {custody!r} holds seq "
                               f"{item['seq']}, which it does not")

    def _names_sealed(self, item: dict[str, Any]) -> str | None:
        """What is wrong with a custody or purge entry's claim to be a sealed file."""
        sealed = self._sealed.get(item["seq"])
        if sealed is None:
            self._ask()
            return f"seq {item['seq']}, which seals no file before it"
        for field in ("sha256", "file", "size"):
            if field in item and item[field] != sealed[field]:
                return (f"seq {item['seq']} with {field} {str(item[field])[:80]!r}, sealed as "
                        f"{str(sealed[field])[:80]!r}")
        return None


def _head_text(head: Any) -> str:
    if isinstance(head, dict):
        return f"seq {str(head.get('seq'))[:20]} hash {str(head.get('hash'))[:16]}…"
    return repr(head)[:40]
