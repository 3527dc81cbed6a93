"""Stand-in for libcamera's Python bindings, which exist only on Raspberry Pi OS.

Just enough for picamera2's modules to import and for its request and encoder code to run:
every name is a stable class (so `controls.SensorTimestamp` is one dict key, with `.name`),
value types compare by their fields, and `FrameMetadata.Status.Success` is a constant. The
camera itself is tests/hal/picamera2_contract/camera.py's.
"""

from __future__ import annotations

from typing import Any


class _Value:
    """A libcamera value type (Transform, ColorSpace, Size, Rectangle...): fields, equality."""

    def __init__(self, *args: Any, **fields: Any) -> None:
        self._args = args
        self.__dict__.update(fields)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._args,
                     tuple(sorted((k, v) for k, v in vars(self).items() if k != "_args"))))

    def __str__(self) -> str:
        return f"{type(self).__name__}{self._args}"


class _Namespace(type):
    """Any attribute of a class is another stable class named after it."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        made = _Namespace(name, (_Value,), {"name": name})
        setattr(cls, name, made)
        return made


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    made = _Namespace(name, (_Value,), {"name": name})
    globals()[name] = made
    return made
