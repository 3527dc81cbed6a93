"""A configuration file read as TOML: whatever is wrong with it is one line naming the file
and, where there is one, the place in it.

The device's config.toml (agent.config) and the dock's dock.toml (agent.dock.service_config)
live on two machines and check their own keys, but read their files the same way.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

LIMIT = 1 << 20  # bytes: a real configuration is a few KiB


class TomlFileError(Exception):
    """The file cannot be read as TOML: one line."""


def read_toml(path: Path) -> dict[str, Any]:
    """The file as TOML, at most LIMIT bytes of it."""
    try:
        with path.open("rb") as f:
            data = f.read(LIMIT + 1)
    except OSError as exc:
        raise TomlFileError(f"cannot read configuration {path}: {exc.strerror}") from None
    if len(data) > LIMIT:
        raise TomlFileError(f"config error in {path}: longer than {LIMIT} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TomlFileError(f"config error in {path}: not UTF-8 at {_place(data, exc.start)} "
                            f"(byte {data[exc.start]:#04x})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlFileError(f"config error in {path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nesting
        deepest = max(text.splitlines() or [""], key=lambda line: line.count("[") +
                      line.count("{"))
        line = text.splitlines().index(deepest) + 1 if text else 1
        raise TomlFileError(f"config error in {path}: not valid TOML: arrays or tables nested "
                            f"too deeply (at line {line})") from None
    except ValueError as exc:  # an integer of thousands of digits
        digits = re.search(r"\d[\d_]{99,}", text)
        where = _place(data, len(text[:digits.start()].encode())) if digits else "?"
        raise TomlFileError(f"config error in {path}: not valid TOML at {where}: {exc}") \
            from None


def _place(data: bytes, offset: int) -> str:
    line, line_start = data.count(b"\n", 0, offset) + 1, data.rfind(b"\n", 0, offset) + 1
    return f"line {line}, column {offset - line_start + 1}"
