"""Retention classes: how long the agency keeps each sealed file, told from the chain alone.

A recording that an officer marked important (a `mark` record, 重要标记) is kept under the
longer `marked` retention, all its sealed files with it; every other file is `standard`.
The device, the dock and the archive all ask this module, so that the class of a file is
decided in one place (docs/chain-format.md, "Retention classes").
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

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
