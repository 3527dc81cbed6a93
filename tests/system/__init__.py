"""Whole-daemon runs on the simulated device, all marked `system`: `pytest -m "not system"`
skips them."""
