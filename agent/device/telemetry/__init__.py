"""Fleet telemetry over MQTT: publisher, outbox, discovery, status."""
