"""The SoC's temperature and the firmware's power flags, read from sysfs-shaped folders laid
out as a Raspberry Pi's kernel lays them out."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ThermalConfig
from hal.thermal import SimulatedThermal, SysfsThermal, ThermalError, open_thermal


def pi_sysfs(root: Path, millidegrees: str = "52300", throttled: str | None = "0",
             lcrit_alarm: str | None = None) -> SysfsThermal:
    """thermal_zone0/temp; the firmware driver's get_throttled ("%x\\n", drivers/firmware/
    raspberrypi.c); and raspberrypi-hwmon's rpi_volt with in0_lcrit_alarm, if given."""
    zone = root / "class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text(millidegrees + "\n")
    firmware = root / "devices/platform/soc/soc:firmware/get_throttled"
    if throttled is not None:
        firmware.parent.mkdir(parents=True)
        firmware.write_text(throttled + "\n")
    hwmon = root / "class/hwmon"
    (hwmon / "hwmon0").mkdir(parents=True)
    (hwmon / "hwmon0" / "name").write_text("cpu_thermal\n")
    if lcrit_alarm is not None:
        (hwmon / "hwmon1").mkdir()
        (hwmon / "hwmon1" / "name").write_text("rpi_volt\n")
        (hwmon / "hwmon1" / "in0_lcrit_alarm").write_text(lcrit_alarm + "\n")
    return SysfsThermal(zone, firmware, hwmon)


def test_temperature_in_millidegrees(tmp_path: Path) -> None:
    assert pi_sysfs(tmp_path).celsius() == pytest.approx(52.3)


@pytest.mark.parametrize(("word", "under_voltage", "throttled", "described"), [
    ("0", False, False, "normal now; since boot: nothing (0x0"),
    # Under-voltage now and since boot, the ARM capped because of it: what a weak supply gives.
    ("50003", True, True, "under-voltage, ARM frequency capped now; since boot: "
                          "under-voltage, throttled (0x50003"),
    # Hot: throttled and at the soft limit now; nothing wrong with the supply.
    ("e000e", False, True, "ARM frequency capped, throttled, soft temperature limit now"),
    # It was under-voltage earlier; it is not now.
    ("50000", False, False, "normal now; since boot: under-voltage, throttled"),
])
def test_the_firmwares_word_is_decoded(tmp_path: Path, word: str, under_voltage: bool,
                                       throttled: bool, described: str) -> None:
    flags = pi_sysfs(tmp_path, throttled=word).power_flags()
    assert flags is not None
    assert (flags.under_voltage, flags.throttled) == (under_voltage, throttled)
    assert described in flags.describe()


def test_without_get_throttled_the_hwmon_alarm_still_tells_under_voltage(tmp_path: Path) -> None:
    flags = pi_sysfs(tmp_path, throttled=None, lcrit_alarm="1").power_flags()
    assert flags is not None and flags.under_voltage and not flags.throttled
    assert flags.describe().startswith("under-voltage (")
    assert pi_sysfs(tmp_path / "other", throttled=None).power_flags() is None  # not a Pi


def test_unreadable_values_are_named(tmp_path: Path) -> None:
    thermal = pi_sysfs(tmp_path, throttled="bogus")
    with pytest.raises(ThermalError, match="get_throttled: 'bogus' is not the firmware's"):
        thermal.power_flags()
    with pytest.raises(ThermalError, match="thermal_zone9/temp"):
        SysfsThermal(tmp_path / "thermal_zone9")


def test_the_simulated_board_is_cool_and_well_powered(tmp_path: Path) -> None:
    thermal = open_thermal(ThermalConfig(backend="sim"), tmp_path)
    assert isinstance(thermal, SimulatedThermal) and thermal.celsius() == 45.0
    flags = thermal.power_flags()
    assert flags is not None and not flags.under_voltage and not flags.throttled
    assert open_thermal(ThermalConfig(backend="none"), tmp_path) is None


def test_the_defaults_stop_at_the_pi_5s_throttle_point_and_warn_before() -> None:
    config = ThermalConfig()
    assert config.stop_celsius <= 80 and config.warn_celsius < config.stop_celsius
