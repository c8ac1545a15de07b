"""The probe registry: listing, unknown names, detection on recorded trees, read_state."""

from __future__ import annotations

import pytest
from test_runtime_nvml import FakeNvml
from test_runtime_telemetry import JETSON, LAPTOP, _tree

from ponder import ConfigError
from ponder.runtime import (
    PROBES,
    Ina3221Probe,
    NvmlProbe,
    PowerSupplyProbe,
    detect_probes,
    list_probes,
    make_probe,
    read_state,
)

ALL = ["ina3221", "nvml", "power_supply", "rapl"]


def test_list_probes_has_a_description_each():
    listed = list_probes()
    assert sorted(listed) == ALL == PROBES.names()
    assert all(isinstance(text, str) and text for text in listed.values())


def test_unknown_probe_fails_with_the_list(tmp_path):
    with pytest.raises(ConfigError, match="unknown telemetry probe 'acpi'; known: ina3221, nvml"):
        make_probe("acpi", tmp_path)
    with pytest.raises(ConfigError, match="known: ina3221"):
        detect_probes(tmp_path, names=["power_supply", "acpi"])


def test_detect_on_a_laptop_tree_reports_reasons(tmp_path):
    sysfs = _tree(tmp_path / "sys", LAPTOP)
    found = detect_probes(sysfs, options={"nvml": {"library": FakeNvml(gpus=0)}})
    assert sorted(found) == ALL
    assert isinstance(found["power_supply"], PowerSupplyProbe)
    assert "no Intel RAPL" in found["rapl"]
    assert "not a Jetson" in found["ina3221"]
    assert "no NVIDIA GPU at index 0" in found["nvml"]


def test_detect_on_a_jetson_tree(tmp_path):
    sysfs = _tree(tmp_path / "sys", JETSON)
    _tree(tmp_path, {"etc/nv_tegra_release": "# R35 (release), REVISION: 4.1"})
    found = detect_probes(sysfs, options={"nvml": {"library": FakeNvml()}})
    assert isinstance(found["ina3221"], Ina3221Probe)
    assert "Jetson board" in found["nvml"] and "ina3221" in found["nvml"]


def test_unexpected_failure_is_recorded_not_raised(tmp_path, caplog):
    class Broken(FakeNvml):
        def nvmlDeviceGetName(self, handle):
            raise RuntimeError("driver hiccup")

    found = detect_probes(tmp_path / "sys", names=["nvml"], options={"nvml": {"library": Broken()}})
    assert found["nvml"] == "RuntimeError: driver hiccup"
    assert "nvml failed unexpectedly" in caplog.text


def test_read_state_from_battery(tmp_path):
    found = detect_probes(_tree(tmp_path / "sys", LAPTOP), names=["power_supply", "rapl"])
    state = read_state(found, clock=lambda: 42.0)
    assert state.battery_percent == 57.0 and state.charging is False
    assert state.power_w == pytest.approx(8.431)
    assert state.time_s == 42.0 and state.simulated is False


def test_read_state_takes_power_from_jetson_rail_when_no_battery(tmp_path):
    found = detect_probes(_tree(tmp_path / "sys", JETSON), names=["power_supply", "ina3221"])
    state = read_state(found, clock=lambda: 0.0)
    assert state.battery_percent is None and state.charging is None
    assert state.power_w == pytest.approx(5.072 * 1.184)


def test_read_state_takes_gpu_power_when_no_battery(tmp_path):
    gpu = NvmlProbe(library=FakeNvml(power_mw=75_000), root=tmp_path)
    state = read_state({"power_supply": "no battery", "nvml": gpu}, clock=lambda: 0.0)
    assert state.power_w == pytest.approx(75.0)


def test_read_state_with_nothing_is_all_unknown():
    state = read_state({"power_supply": "no battery"}, clock=lambda: 1.5)
    assert (state.battery_percent, state.charging, state.power_w) == (None, None, None)


def test_an_unavailable_probe_is_in_the_error_family():
    import ponder
    from ponder.runtime import ProbeUnavailable

    assert issubclass(ProbeUnavailable, ponder.PonderError)  # one except catches every user error
