"""The body-camera recorder agent."""

__version__ = "0.1.0"
