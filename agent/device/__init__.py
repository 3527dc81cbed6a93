"""The body-camera daemon, its state machine and its services."""
