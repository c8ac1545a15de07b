"""Telemetry probes on recorded sysfs trees: units, missing files, wrap-around, no battery."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ponder.runtime._telemetry.sysfs import (
    Ina3221Probe,
    PowerSupplyProbe,
    ProbeUnavailable,
    RaplProbe,
)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


# A laptop battery as a ThinkPad's driver writes it (power_now in µW, energy_now in µWh).
LAPTOP = {
    "class/power_supply/AC/type": "Mains",
    "class/power_supply/AC/online": "0",
    "class/power_supply/BAT0/type": "Battery",
    "class/power_supply/BAT0/status": "Discharging",
    "class/power_supply/BAT0/capacity": "57",
    "class/power_supply/BAT0/power_now": "8431000",
    "class/power_supply/BAT0/energy_now": "31250000",
}
# A phone-style driver: current_now (µA, negative while discharging) and voltage_now (µV).
CURRENT_ONLY = {
    "class/power_supply/battery/type": "Battery",
    "class/power_supply/battery/status": "Charging",
    "class/power_supply/battery/capacity": "12",
    "class/power_supply/battery/current_now": "-1500000",
    "class/power_supply/battery/voltage_now": "3850000",
}


def test_laptop_battery_units(tmp_path):
    state = PowerSupplyProbe(_tree(tmp_path, LAPTOP)).read()
    assert state.percent == 57.0 and state.charging is False
    assert state.power_w == pytest.approx(8.431)
    assert state.energy_wh == pytest.approx(31.25)


def test_power_from_current_and_voltage(tmp_path):
    state = PowerSupplyProbe(_tree(tmp_path, CURRENT_ONLY)).read()
    assert state.charging is True and state.percent == 12.0
    assert state.power_w == pytest.approx(1.5 * 3.85)  # |µA| × µV = 1e-12 W
    assert state.energy_wh is None


def test_no_battery_says_why(tmp_path):
    root = _tree(tmp_path, {"class/power_supply/AC/type": "Mains"})
    with pytest.raises(ProbeUnavailable, match="no battery"):
        PowerSupplyProbe(root)


def test_garbage_value_is_unavailable_not_a_crash(tmp_path):
    root = _tree(tmp_path, {**LAPTOP, "class/power_supply/BAT0/capacity": "unknown"})
    with pytest.raises(ProbeUnavailable, match="not an integer"):
        PowerSupplyProbe(root).read()


def _rapl(root: Path, energy: int, max_range: int = 262143328850) -> Path:
    return _tree(
        root,
        {
            "class/powercap/intel-rapl:0/name": "package-0",
            "class/powercap/intel-rapl:0/energy_uj": str(energy),
            "class/powercap/intel-rapl:0/max_energy_range_uj": str(max_range),
            "class/powercap/intel-rapl:0:0/name": "core",  # a subdomain: not counted twice
            "class/powercap/intel-rapl:0:0/energy_uj": "5",
            "class/powercap/intel-rapl:0:0/max_energy_range_uj": "100",
        },
    )


def test_rapl_counts_joules_across_a_wrap(tmp_path):
    root = _rapl(tmp_path, energy=999_000_000, max_range=1_000_000_000)
    probe = RaplProbe(root)
    assert [d.name for d in probe.domains] == ["intel-rapl:0"]
    (root / "class/powercap/intel-rapl:0/energy_uj").write_text("999500000\n")
    assert probe.read_joules() == pytest.approx(0.5)
    (root / "class/powercap/intel-rapl:0/energy_uj").write_text("250000\n")  # wrapped
    # 0.5 J to the top (999,500,000 -> 1,000,000,000), one µJ for the step to zero, 0.25 J after
    assert probe.read_joules() == pytest.approx(0.5 + 0.500001 + 0.25)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_root_only_counter_is_unavailable(tmp_path):
    root = _rapl(tmp_path, energy=10)
    (root / "class/powercap/intel-rapl:0/energy_uj").chmod(0)
    with pytest.raises(ProbeUnavailable, match="root-only"):
        RaplProbe(root)


def test_no_rapl_says_why(tmp_path):
    with pytest.raises(ProbeUnavailable, match="no Intel RAPL"):
        RaplProbe(tmp_path)


# A Jetson Orin Nano's INA3221 rails (hwmon layout of L4T 35+): mV and mA.
JETSON = {
    "class/hwmon/hwmon0/name": "cpu_thermal",
    "class/hwmon/hwmon1/name": "ina3221",
    "class/hwmon/hwmon1/in1_label": "VDD_IN",
    "class/hwmon/hwmon1/in1_input": "5072",
    "class/hwmon/hwmon1/curr1_input": "1184",
    "class/hwmon/hwmon1/in2_label": "VDD_CPU_GPU_CV",
    "class/hwmon/hwmon1/in2_input": "5064",
    "class/hwmon/hwmon1/curr2_input": "320",
    "class/hwmon/hwmon1/in4_label": "sum of shunt voltages",  # no current channel: skipped
}


def test_jetson_rails_in_watts(tmp_path):
    watts = Ina3221Probe(_tree(tmp_path, JETSON)).read_watts()
    assert set(watts) == {"VDD_IN", "VDD_CPU_GPU_CV"}
    assert watts["VDD_IN"] == pytest.approx(5.072 * 1.184)  # mV × mA = µW
    assert watts["VDD_CPU_GPU_CV"] == pytest.approx(5.064 * 0.320)


def test_no_jetson_rails_says_why(tmp_path):
    with pytest.raises(ProbeUnavailable, match="not a Jetson"):
        Ina3221Probe(_tree(tmp_path, {"class/hwmon/hwmon0/name": "k10temp"}))
