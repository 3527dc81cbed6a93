"""The body-camera recorder agent.

The version is the installed package's (pyproject.toml holds it once); the boot record
seals it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bodycam-agent")
except PackageNotFoundError:  # a checkout on sys.path that was never installed
    __version__ = "0+unknown"
