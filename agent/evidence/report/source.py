"""A store read for the report: verified first, then analysed (timeline.py).

The verifier's verdict comes with the picture, never instead of it: a store that does not
verify is still drawn from the records that can be read, under its findings. A dock's
evidence folder adds what the device's store does not hold: the custody records in its
receipts (the copy ends at the head the dock verified, before the custody record) and,
from its manifest, the files it holds and when it pulled them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.evidence.chain import parse_line, whole_lines
from agent.evidence.report.timeline import (
    Figures,
    Incident,
    Interruption,
    Shift,
    analyse,
    select,
    total,
    wall_text,
    wall_us,
)
from agent.evidence.store import Store
from agent.evidence.verify import Outside, Report, verify_store
from agent.evidence.witness import Receipt, in_folder


@dataclass(frozen=True)
class Window:
    """Which shifts the report shows: one officer's, those overlapping [since, until]."""

    officer: str | None = None
    since: int | None = None  # µs since the epoch, UTC
    until: int | None = None


@dataclass
class StoreReport:
    store: str
    device: str
    verified: Report
    shifts: list[Shift]  # the shifts the window selects
    all_shifts: int  # in the whole chain

    @property
    def figures(self) -> Figures:
        return total(self.shifts)


def read_store(root: Path, window: Window, key: Path | None = None,
               outside: Outside | None = None) -> StoreReport:
    """Verify the store (with the key and witnesses given, as `bodycam verify`), then
    analyse every record that can be read."""
    verified = verify_store(root, key, outside=outside or Outside())
    folder = in_folder(root)
    manifest = folder.manifest or {}
    held = manifest.get("held")
    held = held if isinstance(held, list) else []
    archived_at = wall_us(manifest.get("pulled_at")) if folder.dock_copy else None
    shifts = analyse(stream_records(Store(root).chain, folder.receipts),
                     {item["seq"] for item in held
                      if isinstance(item, dict) and type(item.get("seq")) is int}, archived_at)
    return StoreReport(str(root), shifts[0].device if shifts else "?", verified,
                       select(shifts, window.officer, window.since, window.until), len(shifts))


def stream_records(chain: Path, receipts: list[Receipt]) -> Iterator[dict[str, Any]]:
    """Every whole record of the journal, streamed, then the custody records of the
    receipts that come after its last (a dock's copy ends before them)."""
    last = 0
    for _, line in whole_lines(chain) if chain.is_file() else ():
        with contextlib.suppress(ValueError):  # not a whole record: the verifier says so
            body = parse_line(line.rstrip(b"\n"))[2]
            last = max(last, body["seq"])
            yield body
    yield from (r.body for r in receipts if r.body["seq"] > last)


def reports_json(reports: list[StoreReport], window: Window) -> str:
    """`bodycam report --json`: every figure and every item the picture draws, times as
    the chain writes them (UTC), durations in seconds."""
    return json.dumps({
        "ok": all(r.verified.ok for r in reports),
        "window": {"officer": window.officer, "from": _iso(window.since),
                   "to": _iso(window.until)},
        "stores": [_store(r) for r in reports]}, indent=2, ensure_ascii=False)


def _store(report: StoreReport) -> dict[str, Any]:
    return {"store": report.store, "device": report.device,
            "verified": {"ok": report.verified.ok, "summary": report.verified.summary(),
                         "findings": [str(f) for f in report.verified.findings]},
            "shifts_in_chain": report.all_shifts,
            "figures": _figures(report.figures),
            "shifts": [_shift(s) for s in report.shifts]}


def _shift(shift: Shift) -> dict[str, Any]:
    return {"number": shift.number, "officer": shift.officer, "device": shift.device,
            "start": _iso(shift.start), "end": _iso(shift.end), "began_by": shift.began_by,
            "ended_by": shift.ended_by, "restarts": shift.restarts,
            "figures": _figures(shift.figures()),
            "incidents": [_incident(i) for i in shift.incidents],
            "interruptions": [_interruption(i) for i in shift.interruptions],
            "spans": [{"kind": s.kind, "start": _iso(s.start), "end": _iso(s.end),
                       "label": s.label} for s in shift.spans],
            "events": [{"kind": e.kind, "at": _iso(e.at), "label": e.label, "seq": e.seq}
                       for e in shift.events]}


def _incident(incident: Incident) -> dict[str, Any]:
    custody = incident.custody
    delay = incident.custody_delay_us
    return {"number": incident.number, "start": _iso(incident.start),
            "end": _iso(incident.end),
            "recordings": [{"seq": r.seq, "mode": r.mode, "trigger": r.trigger,
                            "start": _iso(r.start), "end": _iso(r.end),
                            "stop_reason": r.stop_reason, "recorded_s": _s(r.media_us),
                            "pre_event_s": _s(r.pre_event_us), "files": r.files}
                           for r in incident.recordings],
            "interruptions": [i.seq for i in incident.interruptions],
            "marks": incident.marks, "photos": incident.photos,
            "custody": None if custody is None else {
                "at": _iso(custody.at), "seq": custody.seq, "dock": custody.dock,
                "delay_s": _s(delay) if delay is not None else None},
            "purged_on_device": _iso(incident.purged_at), "archived_here": incident.archived}


def _interruption(gap: Interruption) -> dict[str, Any]:
    return {"seq": gap.seq, "cause": gap.cause, "detail": gap.detail,
            "start": _iso(gap.start), "end": _iso(gap.end), "duration_s": _s(gap.duration_us),
            "recording_before": gap.recording_before, "recording_after": gap.recording_after,
            "explained": gap.explained, "voice_note": gap.explained_by}


def _figures(figures: Figures) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in vars(figures).items():
        if name.endswith("_us"):
            out[name[:-3] + "_s"] = None if value is None else _s(value)
        else:
            out[name] = value
    return out


def _s(us: int) -> float:
    return round(us / 1_000_000, 3)


def _iso(us: int | None) -> str | None:
    return None if us is None else wall_text(us)
