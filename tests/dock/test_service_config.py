"""dock.toml: every key checked, each mistake one line naming the file, the key and the
value; paths relative to the file's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.dock.service_config import ServiceConfigError, load_service_config
from tests.support.mosquitto import Pki as MqttPki

GOOD = """operator = "operator Li"
evidence = "evidence"
bays = ["https://10.0.0.2:8443", "https://10.0.0.3:8443/"]
[tls]
cert = "dock.crt"
key = "dock.key"
ca = "device-ca.pem"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ("dock.crt", "dock.key", "device-ca.pem"):
        (tmp_path / name).write_text("PEM")
    return tmp_path


def test_a_good_file_with_defaults_and_paths_beside_it(folder: Path) -> None:
    path = folder / "dock.toml"
    path.write_text(GOOD + '[archive]\nurl = "s3://evidence/agency"\n')
    config = load_service_config(path)
    assert config.evidence == folder / "evidence"
    assert config.state == folder / "dock-state.json"
    assert config.cert == folder / "dock.crt"
    assert config.bays == ("https://10.0.0.2:8443", "https://10.0.0.3:8443")
    assert (config.max_concurrent, config.connections, config.poll_s) == (4, 4, 5.0)
    assert config.archive is not None and config.archive.retention_days == 365
    assert config.archive.marked_retention_days == 3650
    assert config.mbit_for("https://10.0.0.2:8443") == 0  # uncapped unless asked
    assert config.mqtt is None


def test_the_dock_status_over_mqtt(folder: Path, pki: MqttPki) -> None:
    cert, key = pki.issue("DOCK-1")
    path = folder / "dock.toml"
    path.write_text(GOOD + f'[mqtt]\nurl = "mqtts://broker.example"\nid = "DOCK-1"\n'
                    f'ca = "{pki.ca}"\ncert = "{cert}"\nkey = "{key}"\n')
    mqtt = load_service_config(path).mqtt
    assert mqtt is not None and mqtt.dock_id == "DOCK-1"
    assert (mqtt.broker.host, mqtt.broker.port, mqtt.broker.tls) == ("broker.example", 8883, True)
    assert (mqtt.ca, mqtt.cert, mqtt.key) == (pki.ca, cert, key)
    assert (mqtt.heartbeat_s, mqtt.keepalive_s, mqtt.reconnect_max_s) == (60, 30, 60)


def test_a_bay_cap_for_every_bay_and_one_bay_apart(folder: Path) -> None:
    path = folder / "dock.toml"
    path.write_text("bay_mbit = 25\n" + GOOD.replace(
        "[tls]", '[bay_mbit_override]\n"https://10.0.0.3:8443/" = 100.5\n[tls]'))
    config = load_service_config(path)
    assert config.mbit_for("https://10.0.0.2:8443") == 25
    assert config.mbit_for("https://10.0.0.3:8443") == 100.5


@pytest.mark.parametrize(("change", "message"), [
    (("operator", 'operator = ""'), "operator = '': empty"),
    (("operator", None), "missing key operator"),
    (("bays", 'bays = ["https://a:1", "https://a:1"]'), "not a list of distinct device"),
    (("bays", "bays = [1]"), "bays = [1]: 1 is not an address like https://10.0.0.2:8443"),
    (("bays", 'bays = ["https://a:1", "https://a:1/"]'),  # one bay, twice
     "bays = ['https://a:1', 'https://a:1/']: not a list of distinct device addresses"),
    (('cert = "dock.crt"', f'cert = "{"x" * 5000}"'),
     "[tls] cert = 'xxxxxxxxxx"),  # cut, then: cannot be read (File name too long)
    (("[tls]", "[tlz]"), "unknown key [tlz]"),  # not also: missing key [tls]
    ((None, "pol_s = 5"), "unknown key pol_s"),
    ((None, "poll_s = true"), "poll_s = True: Input should be a valid number"),
    ((None, "poll_s = 0.05"), "poll_s = 0.05: Input should be greater than or equal to 0.1"),
    ((None, "max_concurrent = 2.5"), "max_concurrent = 2.5: Input should be a valid integer"),
    (("evidence", 'evidence = "a\\nb"'), "control characters"),
    (("[tls]", '[archive]\nurl = "s3://X"\n[tls]'), "[archive] url = 's3://X': not s3://"),
    (("[tls]", '[archive]\nurl = "s3://ok-bucket"\nretention_days = 0\n[tls]'),
     "[archive] retention_days = 0: Input should be greater than or equal to 1"),
    (("[tls]", '[archive]\nurl = "s3://ok-bucket"\nretention_days = 4000\n[tls]'),
     "[archive] marked_retention_days = 3650: not longer than retention_days = 4000"),
    (("[tls]", '[archive]\nurl = "s3://ok-bucket"\nkeep = 1\n[tls]'),
     "unknown key [archive] keep"),
    (('key = "dock.key"', ""), "missing key [tls] key"),
    ((None, "bay_mbit = -1"), "bay_mbit = -1: Input should be greater than or equal to 0"),
    ((None, 'bay_mbit = "25"'), "bay_mbit = '25': Input should be a valid number"),
    (("[tls]", '[bay_mbit_override]\n"https://10.0.0.9:8443" = 5\n[tls]'),
     "[bay_mbit_override] https://10.0.0.9:8443 = 5: not one of bays"),
    (("[tls]", '[bay_mbit_override]\n"https://10.0.0.2:8443" = true\n[tls]'),
     "[bay_mbit_override] https://10.0.0.2:8443 = True: Input should be a valid number"),
    (("[tls]", '[mqtt]\nurl = "http://broker"\nid = "DOCK-1"\n[tls]'),
     "[mqtt] url = 'http://broker': expected mqtt://host:port or mqtts://host:port"),
    (("[tls]", '[mqtt]\nurl = "mqtts://broker"\nid = "DOCK/1"\n[tls]'),
     "[mqtt] id = 'DOCK/1': not 1 to 64 letters, digits"),
    (("[tls]", '[mqtt]\nurl = "mqtts://broker"\n[tls]'), "missing key [mqtt] id"),
    (("[tls]", '[mqtt]\nurl = "mqtts://broker"\nid = "D"\ncert = "dock.crt"\n[tls]'),
     "[mqtt] cert = 'dock.crt', key = None: a client certificate needs its key"),
    (("[tls]", '[mqtt]\nurl = "mqtt://broker"\nid = "D"\nca = "device-ca.pem"\n[tls]'),
     "[mqtt] url = 'mqtt://broker': ca, cert and key need mqtts://"),
    (("[tls]", '[mqtt]\nurl = "mqtts://broker"\nid = "D"\nca = "device-ca.pem"\n[tls]'),
     "[mqtt] ca = 'device-ca.pem': not a PEM CA ("),
    (("[tls]", '[mqtt]\nurl = "mqtts://broker"\nid = "D"\nheartbeat_s = 0\n[tls]'),
     "[mqtt] heartbeat_s = 0: Input should be greater than or equal to 0.1"),
])
def test_each_mistake_is_one_line(folder: Path, change: tuple[str | None, str | None],
                                  message: str) -> None:
    start, replacement = change
    lines = GOOD.splitlines()
    if start is None:
        lines.insert(0, replacement or "")
    else:
        lines = [(replacement if line.startswith(start) else line) for line in lines]
        lines = [line for line in lines if line is not None]
    path = folder / "dock.toml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ServiceConfigError) as error:
        load_service_config(path)
    text = str(error.value)
    assert text.startswith(f"config error in {path}: ") and "\n" not in text
    assert message in text, text


def test_discovery_is_off_unless_configured_and_then_bays_may_be_left_out(folder: Path) -> None:
    path = folder / "dock.toml"
    path.write_text(GOOD)
    assert load_service_config(path).discovery == ()
    path.write_text(GOOD.replace('bays = ["https://10.0.0.2:8443", "https://10.0.0.3:8443/"]\n',
                                 "") + '[discovery]\ninterfaces = ["usb0", "192.168.7.1"]\n')
    config = load_service_config(path)
    assert config.discovery == ("usb0", "192.168.7.1") and config.bays == ()
    path.write_text(GOOD + "[discovery]\nenabled = false\ninterfaces = []\n")
    assert load_service_config(path).discovery == ()


@pytest.mark.parametrize(("table", "message"), [
    ("interfaces = []", "[discovery] interfaces = []: no link to find devices on"),
    ('interfaces = ["usb0", "usb0"]', "not a list of distinct interface names or addresses"),
    ('interfaces = ["usb 0"]', "[discovery] interfaces = ['usb 0']: 'usb 0' is not an "
     "interface name (usb0) or an address of the dock"),
    ("interfaces = [7]", "7 is not an interface name"),
    ('interfaces = "usb0"', "[discovery] interfaces = 'usb0': Input should be a valid list"),
    ('enabled = "yes"\ninterfaces = ["usb0"]',
     "[discovery] enabled = 'yes': Input should be a valid boolean"),
    ("enabled = true", "[discovery] missing key interfaces"),
    ('interfaces = ["usb0"]\nbrowse = 1', "unknown key [discovery] browse"),
    ('enabled = false\ninterfaces = ["usb 0"]', "'usb 0' is not an interface name"),
])
def test_a_bad_discovery_table_is_one_line(folder: Path, table: str, message: str) -> None:
    path = folder / "dock.toml"
    path.write_text(GOOD + f"[discovery]\n{table}\n")
    with pytest.raises(ServiceConfigError) as error:
        load_service_config(path)
    text = str(error.value)
    assert text.startswith(f"config error in {path}: ") and "\n" not in text
    assert message in text, text


def test_without_discovery_bays_are_still_required(folder: Path) -> None:
    path = folder / "dock.toml"
    path.write_text(GOOD.replace('bays = ["https://10.0.0.2:8443", "https://10.0.0.3:8443/"]',
                                 "bays = []"))
    with pytest.raises(ServiceConfigError, match=r"bays = \[\]: no device to pull"):
        load_service_config(path)
    path.write_text(GOOD.replace('bays = ["https://10.0.0.2:8443", "https://10.0.0.3:8443/"]',
                                 ""))
    with pytest.raises(ServiceConfigError, match="missing key bays"):
        load_service_config(path)
