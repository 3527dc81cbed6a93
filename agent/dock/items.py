"""`bodycam dock status --device ID`: where each sealed file of one device stands on this
dock, from its evidence folder alone.

One pass over the copied chain.jsonl (the files it names, the purges it records, the
custody records it holds) and a look at the folder's small files: partial/, sealed/,
verified.json, archived.jsonl (agent.dock.journal) and receipts/. Read-only and never
following a link; damage is reported as a note (or an item's stage `unknown`), never
raised. Stages: docs/docking.md, "Where each item stands".
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.dock import journal
from agent.dock.direct_file import open_own
from agent.dock.reading import sealed_file
from agent.evidence.chain import SEALED_FILE_TYPES, parse_line

# From the first to the last: each item is at the last stage it reached.
STAGES = ("unknown", "pending", "partial", "held", "verified", "archived", "custody", "purged")


class ItemsError(Exception):
    """No evidence folder to read for that device; one line."""


def device_items(evidence: Path, device: str) -> dict[str, Any]:
    """Each sealed file the device's copied chain names, with its stage, and the totals."""
    folder = evidence / device
    if device in ("", ".", "..") or "/" in device or "\0" in device or not _is_dir(folder):
        raise ItemsError(f"no evidence folder for device {device!r} in {evidence} (the dock "
                         "has pulled no device of that id)")
    notes: list[str] = []
    files, custody, purged = _read_chain(folder, notes)
    for seq, receipt in _receipts(folder, notes):
        for named in receipt:
            custody[named] = min(custody.get(named, seq), seq)
    account = _journal(folder, notes)
    archived = account.files  # its chain slices' entries are no sealed file's stage
    if account.bad:
        notes.append(f"{journal.JOURNAL}: {account.bad} line(s) not whole entries (a torn last "
                     "line from a power cut), not read")
    head = _verified_head(folder, notes)
    items = []
    for seq, name in sorted(files.items()):
        item: dict[str, Any] = {"seq": seq, "file": name, "stage": "unknown"}
        if name is None:
            notes.append(f"chain record {seq}: names no sealed file of the documented form")
        else:
            item.update(_stage(folder, seq, name, head, archived, custody, purged))
        items.append(item)
    totals = {stage: sum(item["stage"] == stage for item in items) for stage in STAGES}
    return {"device": device, "folder": str(folder), "verified_head": head, "items": items,
            "totals": totals, "notes": notes}


def item_lines(view: dict[str, Any]) -> list[str]:
    """The text view: a line per file, then the totals and any notes."""
    lines = [f"{view['device']}: {len(view['items'])} sealed file(s) named by the chain in "
             f"{view['folder']}"]
    lines += [f"  seq {item['seq']} {item['file'] or '?'}: {item['stage']}{_detail(item)}"
              for item in view["items"]]
    lines.append("totals: " + (", ".join(f"{n} {stage}" for stage, n in view["totals"].items()
                                         if n) or "none"))
    lines += [f"note: {note}" for note in view["notes"]]
    return lines


def _detail(item: dict[str, Any]) -> str:
    stage = item["stage"]
    if stage == "partial":
        return f" ({item['bytes']} bytes so far)"
    if stage == "archived":
        return f" ({item['key']} version {item['version_id']}; custody not reported)"
    if stage in ("custody", "purged"):
        return f" (record {item['custody_seq']}{', purged on the device' * (stage == 'purged')})"
    return ""


def _stage(folder: Path, seq: int, name: str, head: int | None,
           archived: dict[int, dict[str, Any]], custody: dict[int, int],
           purged: set[int]) -> dict[str, Any]:
    held = _is_file(folder / name)
    if seq in custody:
        return {"stage": "purged" if seq in purged else "custody", "custody_seq": custody[seq],
                "held": held}
    if seq in archived:
        return {"stage": "archived", "key": archived[seq]["key"],
                "version_id": archived[seq]["version_id"], "held": held}
    if held:
        return {"stage": "verified" if head is not None and seq <= head else "held"}
    part = folder / "partial" / f"{Path(name).name}.part"
    if _is_file(part):
        return {"stage": "partial", "bytes": part.lstat().st_size}
    return {"stage": "pending"}


def _read_chain(folder: Path, notes: list[str]
                ) -> tuple[dict[int, str | None], dict[int, int], set[int]]:
    """The sealed files named (seq: file, None for a name not of the documented form), the
    custody record naming each file first, and the seqs a purge record says were deleted."""
    files: dict[int, str | None] = {}
    custody: dict[int, int] = {}
    purged: set[int] = set()
    bad = 0
    for line in _lines(folder / "chain.jsonl", notes):
        try:
            body = parse_line(line.rstrip(b"\n"))[2]
        except ValueError:
            bad += 1
            continue
        kind, payload = body.get("type"), body.get("payload")
        if kind in SEALED_FILE_TYPES:
            files[body["seq"]] = sealed_file(body)
        elif kind == "custody":
            for named in _seqs(payload, "segments"):
                custody.setdefault(named, body["seq"])
        elif kind == "purge":
            purged.update(_seqs(payload, "files"))
    if bad:
        notes.append(f"chain.jsonl: {bad} line(s) not records, not read (bodycam verify "
                     f"{folder} says why)")
    return files, custody, purged


def _lines(path: Path, notes: list[str]) -> Iterator[bytes]:
    """The whole lines of a file, streamed; a missing or unreadable file is a note."""
    try:
        fd = open_own(path, os.O_RDONLY)
    except OSError as exc:
        notes.append(f"{path.name}: not read ({exc.strerror or exc})")
        return
    with os.fdopen(fd, "rb") as f:
        for line in f:
            if line.endswith(b"\n"):
                yield line


def _seqs(payload: Any, field: str) -> list[int]:
    items = payload.get(field) if isinstance(payload, dict) else None
    return [item["seq"] for item in items if isinstance(item, dict)
            and type(item.get("seq")) is int] if isinstance(items, list) else []


def _receipts(folder: Path, notes: list[str]) -> Iterator[tuple[int, list[int]]]:
    """(custody seq, the files it names) of each receipt in receipts/."""
    receipts = folder / "receipts"
    if not _is_dir(receipts):
        return
    for path in sorted(receipts.glob("*-custody.jsonl")):
        try:
            body = parse_line((_small(path) or b"").rstrip(b"\n"))[2]
        except (OSError, ValueError) as exc:
            notes.append(f"receipts/{path.name}: not a record ({exc})")
            continue
        yield body["seq"], _seqs(body.get("payload"), "segments")


def _journal(folder: Path, notes: list[str]) -> journal.Account:
    try:
        return journal.read(folder)
    except OSError as exc:
        notes.append(f"{journal.JOURNAL}: not read ({exc.strerror or exc})")
        return journal.Account()


def _verified_head(folder: Path, notes: list[str]) -> int | None:
    """The seq of the head the last clean verification reached, None before one."""
    try:
        state = json.loads(_small(folder / "verified.json") or b"null")
    except (OSError, ValueError, RecursionError) as exc:
        notes.append(f"verified.json: not read ({exc}); no file counted verified")
        return None
    if state is None:
        return None
    kept = state.get("state") if isinstance(state, dict) else None  # {"sha256", "state"}
    head = kept.get("head") if isinstance(kept, dict) else None
    if not isinstance(head, dict) or type(head.get("seq")) is not int:
        notes.append("verified.json: no head seq; no file counted verified")
        return None
    return int(head["seq"])


def _small(path: Path) -> bytes | None:
    """A small file's bytes, None when there is none (never through a link)."""
    try:
        fd = open_own(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _is_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False
