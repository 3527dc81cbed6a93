"""The evidence format: chain, store layout, keys, age, verify, decrypt."""
