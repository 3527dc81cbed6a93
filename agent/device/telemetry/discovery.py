"""Home Assistant MQTT discovery: the retained config topics that make a device appear.

Each entity reads the device's retained status JSON with a template, and is
available exactly when the device's availability topic says "online", which the
broker turns to "offline" by the last will. So a fleet manager adds the broker
to Home Assistant and sees every camera, with no code.
"""

from __future__ import annotations

import json
from typing import Any

# key: (component, name, value template, extra config)
_ENTITIES: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "state": ("sensor", "State", "{{ value_json.state }}", {"icon": "mdi:cctv"}),
    "recording": ("binary_sensor", "Recording",
                  "{{ 'ON' if value_json.state == 'recording' else 'OFF' }}",
                  {"device_class": "running"}),
    "health": ("sensor", "Health", "{{ value_json.health }}", {}),
    "battery": ("sensor", "Battery", "{{ value_json.battery.percent }}",
                {"device_class": "battery", "unit_of_measurement": "%",
                 "state_class": "measurement"}),
    "battery_runtime": ("sensor", "Runtime left", "{{ value_json.battery.runtime_min }}",
                        {"device_class": "duration", "unit_of_measurement": "min"}),
    "storage_hours": ("sensor", "Storage left", "{{ value_json.storage.hours_left }}",
                      {"device_class": "duration", "unit_of_measurement": "h"}),
    "clock": ("binary_sensor", "Clock unsynchronised",
              "{{ 'OFF' if value_json.clock.synced else 'ON' }}", {"device_class": "problem"}),
    "unexplained": ("sensor", "Unexplained interruptions",
                    "{{ value_json.unexplained_interruptions | count }}",
                    {"state_class": "measurement"}),
    "export_overdue": ("binary_sensor", "Export overdue",
                       "{{ 'ON' if value_json.export.overdue else 'OFF' }}",
                       {"device_class": "problem"}),
    "unexported_hours": ("sensor", "Oldest unexported footage",
                         "{{ value_json.export.oldest_age_h }}",
                         {"device_class": "duration", "unit_of_measurement": "h"}),
    "chain_head": ("sensor", "Chain head", "{{ value_json.chain_head.seq }}",
                   {"json_attributes_template": "{{ value_json.chain_head | tojson }}",
                    "entity_category": "diagnostic"}),
    "outbox": ("sensor", "Events not yet delivered", "{{ value_json.outbox }}",
               {"entity_category": "diagnostic", "state_class": "measurement"}),
}


def discovery_messages(prefix: str, device: str, status_topic: str, availability_topic: str,
                       version: str) -> list[tuple[str, bytes]]:
    """(topic, retained payload) for every entity of one device."""
    block = {"identifiers": [f"bodycam_{device}"], "name": f"Body camera {device}",
             "manufacturer": "bodycam-agent", "model": "body-worn camera",
             "sw_version": version}
    messages = []
    for key, (component, name, template, extra) in _ENTITIES.items():
        config = {
            "name": name,
            "unique_id": f"bodycam_{device}_{key}",
            "object_id": f"bodycam_{device}_{key}",
            "state_topic": status_topic,
            "value_template": template,
            "availability_topic": availability_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": block,
            **extra,
        }
        if "json_attributes_template" in extra:
            config["json_attributes_topic"] = status_topic
        messages.append((f"{prefix}/{component}/{device}/{key}/config",
                         json.dumps(config, separators=(",", ":")).encode()))
    return messages
