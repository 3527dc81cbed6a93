"""Helpers for the tests: a fast simulated device, a docked device, brokers, PKI, PulseAudio."""
