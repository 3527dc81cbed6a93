"""Retention classes: how long the agency keeps each sealed file, told from the chain alone.

A recording that an officer marked important (a `mark` record, 重要标记) is kept under the
longer `marked` retention, all its sealed files with it; every other file is `standard`.
The device, the dock and the archive all ask this module, so that the class of a file is
decided in one place (docs/chain-format.md, "Retention classes"); and so is what a custody
record may say of how the dock keeps each file (`custody_problems`), which the verifier
asks of every custody record and `bodycam verify s3://` of a receipt its chain does not
reach yet.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from agent.evidence.chain import SEALED_FILE_TYPES

STANDARD = "standard"
MARKED = "marked"
CLASSES = (STANDARD, MARKED)
# How far a device clock ahead of the dock's may shorten an archived file's retention: the
# dock never locks an object beyond its retention from its own clock (docs/archive.md).
CLOCK_ALLOWANCE = timedelta(days=1)
MAX_DAYS = 36_500  # a century: the most any side of the format keeps a file
_WALL = "%Y-%m-%dT%H:%M:%S.%fZ"
UNTIL = "%Y-%m-%dT%H:%M:%SZ"  # an archived retain-until, in custody records and the dock's


def recording_of(payload: dict[str, Any]) -> int | None:
    """The recording a sealed file belongs to (its record's `recording`), if it names one."""
    recording = payload.get("recording")
    return recording if type(recording) is int else None


def file_class(recording: int | None, marked: Collection[int]) -> str:
    """The class of a file of `recording`, given the recordings a mark marks."""
    return MARKED if recording is not None and recording in marked else STANDARD


def chain_facts(records: Iterable[dict[str, Any]]
                ) -> tuple[dict[int, dict[str, Any]], dict[int, int]]:
    """What `custody_problems` is given, from records read in chain order before the custody
    (not verified yet: a record of another shape is left out): the sealed files (seq ->
    `file`, `recording`, `wall`) and the marks (recording -> seq of its first mark)."""
    files: dict[int, dict[str, Any]] = {}
    marked: dict[int, int] = {}
    for record in records:
        payload, seq = record.get("payload"), record.get("seq")
        if not isinstance(payload, dict) or type(seq) is not int:
            continue
        if record.get("type") == "mark" and type(payload.get("recording")) is int:
            marked.setdefault(payload["recording"], seq)
        elif record.get("type") in SEALED_FILE_TYPES and _when(record.get("wall")):
            files[seq] = {"file": str(payload.get("file")), "recording": recording_of(payload),
                          "wall": record["wall"]}
    return files, marked


def custody_problems(payload: dict[str, Any], files: Mapping[int, Mapping[str, Any]],
                     marked: Mapping[int, int]) -> list[str]:
    """What a custody record says of retention that the chain does not allow, each naming
    the file and the two values: a file held under a class other than the one the chain
    gives it when the custody was sealed, and `archive_problems` of the classes held.

    `files`: seq -> `file`, `recording`, `wall` of the sealed files the chain holds before
    the custody; `marked`: recording -> seq of the first mark record before it. A file a
    mark marks only after its custody was legitimately held as `standard` then; a file held
    without a class is held as `standard` (a dock that does not say holds nothing as
    marked). Files not in `files` are the references check's to name; a payload of another
    shape (a receipt read before it is verified) is read as far as it holds."""
    problems = []
    held: dict[int, str] = {}
    segments = payload.get("segments")
    for item in segments if isinstance(segments, list) else []:
        if not isinstance(item, dict) or type(item.get("seq")) is not int:
            continue
        seq: int = item["seq"]
        sealed, claimed = files.get(seq), item.get("retention")
        if sealed is None:
            continue
        if claimed is None:
            held.setdefault(seq, STANDARD)
            continue
        where = f"seq {seq} ({sealed['file']})"
        chain = file_class(sealed["recording"], marked)
        held[seq] = chain
        if claimed not in CLASSES:
            problems.append(f"holds {where} under retention {str(claimed)[:40]!r}, which is "
                            f"no class (standard or marked); the chain gives it {chain!r}")
        elif claimed != chain:
            why = (f"mark record {marked[sealed['recording']]} marks its recording "
                   f"{sealed['recording']} before this custody") if chain == MARKED else \
                "no mark before this custody marks its recording"
            problems.append(f"holds {where} as {claimed!r}, but the chain gives it {chain!r} "
                            f"({why})")
    return [*problems, *archive_problems(payload, files, held)]


def archive_problems(payload: dict[str, Any], files: Mapping[int, Mapping[str, Any]],
                     held: Mapping[int, str]) -> list[str]:
    """Of a custody record (or the payload the device is about to seal): each archived file
    whose `retain_until` falls short of the days of the class it is held under (`held`,
    seq -> class) after its sealing, by more than CLOCK_ALLOWANCE, and `retention_days`
    that are not each class's days. Without `retention_days` (older stores) nothing."""
    days = payload.get("retention_days")
    if days is None:  # older stores: the days were not sealed
        return []
    if not valid_days(days):
        return [f"gives retention_days {json.dumps(days)[:80]}, not the days of each class "
                "(standard and marked, whole days, marked the longer)"]
    problems = []
    archive = payload.get("archive")
    objects = archive.get("objects") if isinstance(archive, dict) else None
    for item in objects if isinstance(objects, list) else []:
        if not isinstance(item, dict) or item.get("seq") not in held:
            continue  # a chain slice, or no file of this custody (the device refuses those)
        kind, sealed = held[item["seq"]], files.get(item["seq"])
        if sealed is None:
            continue
        problem = _short(item.get("retain_until"), sealed["wall"], kind, days[kind])
        if problem:
            problems.append(f"archives seq {item['seq']} ({sealed['file']}) {problem}")
    return problems


def purge_problem(item: dict[str, Any], sealed: Mapping[str, Any] | None,
                  marked: Mapping[int, int], held_marked: bool) -> str | None:
    """What a purge record's entry says of retention that the chain does not allow: the
    class it gives the file is the chain's when the purge was sealed, and a `marked` file
    goes only after a custody that holds it as marked (`held_marked`). Entries without a
    class (older stores, whose device purged after any custody) and files not in the
    chain (the references check's) are not judged."""
    claimed = item.get("retention")
    if claimed is None or sealed is None:
        return None
    where = f"seq {item['seq']} ({sealed['file']})"
    chain = file_class(sealed["recording"], marked)
    if claimed != chain:
        return f"deletes {where} as {str(claimed)[:40]!r}, but the chain gives it {chain!r}"
    if chain == MARKED and not held_marked:
        return (f"deletes {where}, of recording {sealed['recording']} marked by mark record "
                f"{marked[sealed['recording']]}, which no earlier custody record holds as "
                "marked (a marked file leaves the device only after such a custody)")
    return None


def valid_days(days: Any) -> TypeGuard[dict[str, int]]:
    """Whether `retention_days` is what the device seals (and gives a dock in its identity):
    each class's whole days, positive, marked the longer."""
    return isinstance(days, dict) and set(days) == set(CLASSES) and \
        all(type(days[c]) is int and 0 < days[c] <= MAX_DAYS for c in CLASSES) and \
        days[MARKED] > days[STANDARD]


def _short(until: Any, wall: str, kind: str, days: int) -> str | None:
    """Why an archived object's `retain_until` is not enough for a file of class `kind`
    sealed at `wall`, or None."""
    named = until_of(until)
    if named is None:
        return f"until {str(until)[:40]!r}, not a UTC time as 2027-12-03T09:28:09Z"
    sealed = _when(wall)
    if sealed is None:
        return None  # a record of another shape: the verifier names it
    try:
        due = sealed + timedelta(days=days)
    except OverflowError:
        return f"until {until}, short of {days} days from its sealing at {wall} (past 9999)"
    if named >= due - CLOCK_ALLOWANCE:
        return None
    return (f"until {until}, short of the {due:{UNTIL}} its class {kind!r} needs: "
            f"{days} days (retention_days) from its sealing at {wall}")


def until_of(text: Any) -> datetime | None:
    """A retain-until (UNTIL) as a time, or None when it is not one."""
    try:
        return datetime.strptime(text, UNTIL).replace(tzinfo=UTC) if isinstance(text, str) \
            else None
    except ValueError:
        return None


def _when(wall: Any) -> datetime | None:
    """A record's `wall` as a time, or None when it is not one."""
    try:
        return datetime.strptime(str(wall), _WALL).replace(tzinfo=UTC)
    except ValueError:
        return None
