"""NvmlProbe on a fake NVML module: units, the energy fallback, and every unavailable reason."""

from __future__ import annotations

import sys

import pytest

from ponder.runtime._telemetry.nvml import ENERGY_COUNTER, POWER_INTEGRAL, NvmlProbe
from ponder.runtime._telemetry.sysfs import ProbeUnavailable

NOT_SUPPORTED, INVALID_ARGUMENT, DRIVER_NOT_LOADED = 3, 2, 9


class FakeNvml:
    """The pynvml names NvmlProbe uses; power in mW, energy in mJ since 'driver load'."""

    class NVMLError(Exception):
        def __init__(self, value: int):
            super().__init__(f"NVML error {value}")
            self.value = value

    def __init__(self, gpus=1, power_mw=150_000, energy_mj=5_000_000, init_error=None):
        self.gpus, self.power_mw, self.energy_mj = gpus, power_mw, energy_mj
        self.init_error, self.inits = init_error, 0

    def _fail(self, value):
        raise self.NVMLError(value)

    def nvmlInit(self):
        if self.init_error is not None:
            self._fail(self.init_error)
        self.inits += 1

    def nvmlShutdown(self):
        self.inits -= 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return index if index < self.gpus else self._fail(INVALID_ARGUMENT)

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100 80GB HBM3"  # older bindings return bytes

    def nvmlDeviceGetPowerUsage(self, handle):
        return self.power_mw if self.power_mw is not None else self._fail(NOT_SUPPORTED)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self.energy_mj if self.energy_mj is not None else self._fail(NOT_SUPPORTED)


def _probe(nvml, tmp_path, clock=None, **kw):
    return NvmlProbe(library=nvml, root=tmp_path, clock=clock or (lambda: 0.0), **kw)


def test_units_milliwatts_and_millijoules(tmp_path):
    nvml = FakeNvml(power_mw=152_500, energy_mj=5_000_000)
    probe = _probe(nvml, tmp_path)
    assert probe.name == "NVIDIA H100 80GB HBM3"
    assert probe.power_w() == pytest.approx(152.5)
    assert probe.energy_source == ENERGY_COUNTER
    nvml.energy_mj += 2_500  # 2.5 J since the probe was made
    assert probe.read_joules() == pytest.approx(2.5)


def test_no_energy_counter_integrates_power(tmp_path):
    now = [10.0]
    nvml = FakeNvml(power_mw=100_000, energy_mj=None)  # a pre-Volta GPU
    probe = _probe(nvml, tmp_path, clock=lambda: now[0])
    assert probe.energy_source == POWER_INTEGRAL
    now[0] = 12.0  # 2 s at 100 W
    assert probe.read_joules() == pytest.approx(200.0)
    nvml.power_mw, now[0] = 200_000, 13.0  # 1 s ramping 100 -> 200 W: trapezoid, 150 J
    assert probe.read_joules() == pytest.approx(350.0)


def test_close_releases_nvml(tmp_path):
    nvml = FakeNvml()
    with _probe(nvml, tmp_path):
        assert nvml.inits == 1
    assert nvml.inits == 0


def test_no_bindings_says_pip_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as if not installed
    with pytest.raises(ProbeUnavailable, match="pip install nvidia-ml-py"):
        NvmlProbe(root=tmp_path)


def test_no_driver(tmp_path):
    with pytest.raises(ProbeUnavailable, match="no NVIDIA driver"):
        _probe(FakeNvml(init_error=DRIVER_NOT_LOADED), tmp_path)


def test_no_gpu_at_index(tmp_path):
    nvml = FakeNvml(gpus=1)
    with pytest.raises(ProbeUnavailable, match="no NVIDIA GPU at index 3"):
        _probe(nvml, tmp_path, index=3)
    assert nvml.inits == 0  # shut down again


def test_jetson_by_power_error(tmp_path):
    nvml = FakeNvml(power_mw=None)
    with pytest.raises(ProbeUnavailable, match="Ina3221Probe"):
        _probe(nvml, tmp_path)
    assert nvml.inits == 0


def test_jetson_by_tegra_release(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R35 (release), REVISION: 4.1\n")
    with pytest.raises(ProbeUnavailable, match="Jetson board"):
        _probe(FakeNvml(), tmp_path)
