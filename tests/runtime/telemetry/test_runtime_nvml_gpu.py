"""NvmlProbe on a real NVIDIA GPU, checked against nvidia-smi: watts, the board's name, an energy
counter that never goes back, and joules (not millijoules) under load. Skipped without pynvml,
a driver or nvidia-smi. nvidia-smi's --query-gpu has no energy field (`nvidia-smi
--help-query-gpu` lists power.draw but no energy counter), so energy is checked against the
probe's own power readings."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from ponder.runtime._telemetry.nvml import NvmlProbe
from ponder.runtime._telemetry.sysfs import ProbeUnavailable

pytestmark = pytest.mark.gpu


@pytest.fixture
def probe():
    pytest.importorskip("pynvml", reason="needs NVML's bindings: pip install nvidia-ml-py")
    if shutil.which("nvidia-smi") is None:
        pytest.skip("nvidia-smi is not on PATH: no NVIDIA driver here")
    try:
        probe = NvmlProbe(0)
    except ProbeUnavailable as e:  # nvmlInit failed, no GPU 0, or a Jetson
        pytest.skip(str(e))
    yield probe
    probe.close()


def _nvidia_smi() -> tuple[float, str]:
    """GPU 0's power.draw (watts) and name, as nvidia-smi reads them now."""
    query = ["--query-gpu=power.draw,name", "--format=csv,noheader,nounits", "-i", "0"]
    done = subprocess.run(
        ["nvidia-smi", *query], capture_output=True, text=True, timeout=30, check=True
    )
    power, name = (part.strip() for part in done.stdout.strip().split(",", 1))
    return float(power), name


def test_power_is_in_watts_and_the_name_is_nvidia_smis(probe):
    before = probe.power_w()
    smi_w, name = _nvidia_smi()
    ours = (before + probe.power_w()) / 2  # read on both sides of nvidia-smi's reading
    assert probe.name == name
    # the same NVML sensor (+/- 5 W, a ~1 s average since Ampere): a unit slip would be 1000x
    assert abs(ours - smi_w) <= max(15.0, 0.25 * smi_w), (ours, smi_w)


def test_energy_never_goes_back(probe):
    readings = []
    for _ in range(20):
        readings.append(probe.read_joules())
        time.sleep(0.05)
    assert readings[0] >= 0.0
    assert readings == sorted(readings), readings


def test_joules_per_second_are_the_watts_drawn_under_load(probe):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs torch with CUDA to load the GPU")
    # cuda:0 is the probe's GPU 0 on a one-GPU machine; where it is another board, GPU 0 stays
    # idle and joules/second still match its watts, which is what checks the units
    a = torch.randn(4096, 4096, device="cuda")
    out = torch.empty_like(a)
    torch.cuda.synchronize()  # CUDA started before the clock does
    watts, start, t0 = [], probe.read_joules(), time.perf_counter()
    while time.perf_counter() - t0 < 2.0:
        for _ in range(10):
            torch.matmul(a, a, out=out)
        torch.cuda.synchronize()
        watts.append(probe.power_w())
    joules, seconds = probe.read_joules() - start, time.perf_counter() - t0
    mean_w = sum(watts) / len(watts)
    # power_w is a ~1 s average that lags the load's start; a mJ/J slip would be 1000x
    assert 0.5 <= joules / seconds / mean_w <= 2.0, (joules, seconds, mean_w)
