"""The device's parts that run without a daemon: config, outbox, TLS transport, state machine."""
