"""Stand-in for kms++'s bindings (DRM display, picamera2's DrmPreview): imported, never used."""

from typing import Any


class _Names(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return name


class PixelFormat(metaclass=_Names):
    pass
