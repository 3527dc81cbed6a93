"""A configuration file: TOML read, pydantic models checked, each problem one line naming
the file, the key and the value.

The device's config.toml (agent.config) and the dock's dock.toml (agent.dock.service_config)
live on two machines and declare their own keys, but read and check their files the same
way: the person reading the error is an installer, not the author of this code.
"""

from __future__ import annotations

import re
import reprlib
import tomllib
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

LIMIT = 1 << 20  # bytes: a real configuration is a few KiB
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SHORT = reprlib.Repr()  # a value in an error line: whole when short, cut when huge
_SHORT.maxstring = _SHORT.maxother = 200
_SHORT.maxlong = 60

Model = TypeVar("Model", bound=BaseModel)


class ConfigFileError(Exception):
    """A file refused: one line per problem, unknown keys first (a misspelt key is often why
    another is missing)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class Section(BaseModel):
    """Every table: unknown keys, inf and nan refused; each number has bounds of its own."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        """A NUL or a newline in a path, name or URL is never meant, and breaks the system
        calls and log lines it reaches."""
        texts = ([*value, *value.values()] if isinstance(value, dict)
                 else value if isinstance(value, list) else [value])
        if any(isinstance(text, str) and CONTROL.search(text) for text in texts):
            raise ValueError("control characters (NUL, newline, ...) are not allowed")
        return value


def short(value: Any) -> str:
    """A value as an error line shows it: its repr, cut when huge."""
    return _SHORT.repr(value)


def read_toml(path: Path) -> dict[str, Any]:
    """The file as TOML, at most LIMIT bytes of it."""
    try:
        with path.open("rb") as f:
            data = f.read(LIMIT + 1)
    except OSError as exc:
        raise ConfigFileError([f"cannot read configuration {path}: {exc.strerror}"]) from None
    if len(data) > LIMIT:
        raise ConfigFileError([f"config error in {path}: longer than {LIMIT} bytes"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError([f"config error in {path}: not UTF-8 at "
                               f"{_place(data, exc.start)} (byte {data[exc.start]:#04x})"]) \
            from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError([f"config error in {path}: not valid TOML: {exc}"]) from None
    except RecursionError:  # tomllib recurses once per level of nesting
        deepest = max(text.splitlines() or [""], key=lambda line: line.count("[") +
                      line.count("{"))
        line = text.splitlines().index(deepest) + 1 if text else 1
        raise ConfigFileError([f"config error in {path}: not valid TOML: arrays or tables "
                               f"nested too deeply (at line {line})"]) from None
    except ValueError as exc:  # an integer of thousands of digits
        digits = re.search(r"\d[\d_]{99,}", text)
        where = _place(data, len(text[:digits.start()].encode())) if digits else "?"
        raise ConfigFileError([f"config error in {path}: not valid TOML at {where}: "
                               f"{exc}"]) from None


def check(model: type[Model], raw: dict[str, Any], path: Path,
          context: dict[str, Any] | None = None) -> Model:
    """`raw` (read from `path`) as `model`; `context` reaches the validators that ask."""
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda err: err["type"] != "extra_forbidden")
        raise ConfigFileError([_describe(path, model, err) for err in errors]) from exc


def _describe(path: Path, model: type[BaseModel], err: Any) -> str:
    loc = [short(str(part)) if CONTROL.search(str(part)) else str(part)
           for part in err["loc"]]
    why = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"config error in {path}: unknown key {_key(model, loc, err['input'])}"
    if err["type"] == "missing":
        return f"config error in {path}: missing key {_key(model, loc)}"
    if not loc:
        return f"config error in {path}: {why}"
    if len(loc) == 1 and isinstance(err["input"], dict):  # a rule across a table's keys
        return f"config error in {path}: [{loc[0]}] {why}"
    return (f"config error in {path}: {_key(model, loc, err['input'])} = "
            f"{short(err['input'])}: {why}")


def _key(model: type[BaseModel], loc: list[str], value: Any = None) -> str:
    """`[table] key`; at the top a table as `[table]`, a key of the top level by its name."""
    if len(loc) > 1:
        return f"[{'.'.join(loc[:-1])}] {loc[-1]}"
    field = model.model_fields.get(loc[0])
    table = isinstance(value, dict) if field is None else _is_table(field.annotation)
    return f"[{loc[0]}]" if table else loc[0]


def _is_table(annotation: Any) -> bool:
    """A table in TOML: a section's model or a dict, or either or None."""
    if get_origin(annotation) in (Union, UnionType):
        return all(_is_table(arg) or arg is NoneType for arg in get_args(annotation))
    return get_origin(annotation) is dict or (isinstance(annotation, type) and
                                               issubclass(annotation, BaseModel))


def _place(data: bytes, offset: int) -> str:
    line, line_start = data.count(b"\n", 0, offset) + 1, data.rfind(b"\n", 0, offset) + 1
    return f"line {line}, column {offset - line_start + 1}"
