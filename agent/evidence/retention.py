"""Retention classes: how long the agency keeps each sealed file, told from the chain alone.

A recording that an officer marked important (a `mark` record, 重要标记) is kept under the
longer `marked` retention, all its sealed files with it; every other file is `standard`.
The device, the dock and the archive all ask this module, so that the class of a file is
decided in one place (docs/chain-format.md, "Retention classes").
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from agent.evidence.chain import SEALED_FILE_TYPES

STANDARD = "standard"
MARKED = "marked"
CLASSES = (STANDARD, MARKED)


def recording_of(payload: dict[str, Any]) -> int | None:
    """The recording a sealed file belongs to (its record's `recording`), if it names one."""
    recording = payload.get("recording")
    return recording if type(recording) is int else None


def file_class(recording: int | None, marked: Collection[int]) -> str:
    """The class of a file of `recording`, given the recordings a mark marks."""
    return MARKED if recording is not None and recording in marked else STANDARD


def marked_recordings(records: Iterable[dict[str, Any]]) -> set[int]:
    """The recordings a `mark` record marks."""
    return {recording for r in records if r.get("type") == "mark"
            and (recording := recording_of(r.get("payload") or {})) is not None}


def retention_classes(records: list[dict[str, Any]]) -> dict[int, str]:
    """Each sealed file's class, by the seq of the record that seals it."""
    marked = marked_recordings(records)
    return {r["seq"]: file_class(recording_of(r["payload"]), marked)
            for r in records if r.get("type") in SEALED_FILE_TYPES}
