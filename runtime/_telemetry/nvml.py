"""GPU power and energy from NVIDIA's NVML (through the `pynvml` module of nvidia-ml-py),
torch-free, saying why when it cannot: no bindings, no driver, no GPU at that index, or Jetson.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ponder.runtime._telemetry.sysfs import ProbeUnavailable

__all__ = ["NvmlProbe"]

ENERGY_COUNTER = "energy_counter"  # nvmlDeviceGetTotalEnergyConsumption (Volta and later)
POWER_INTEGRAL = "power_integral"  # power × time between reads (older GPUs)


def _load_pynvml() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise ProbeUnavailable(
            "NVML needs its Python bindings, which are not installed: pip install nvidia-ml-py"
        ) from None


class NvmlProbe:
    """Power and energy of GPU `index`, from NVML.

    NVML reports power in mW and energy in mJ since the driver loaded; this probe gives watts
    and joules since it was made. On recent GPUs NVML's power reading is an average over about
    one second, so measure energy over many inferences, not one. GPUs before Volta have no
    energy counter: `read_joules` then integrates power between reads (`energy_source` says
    which). On Jetson boards NVML reads no power: use `Ina3221Probe` there.

    `library` replaces the `pynvml` module (tests pass a fake with the same names); `root` is
    the filesystem root where `/etc/nv_tegra_release` marks a Jetson; `clock` (seconds) times
    the power integral.
    """

    def __init__(
        self,
        index: int = 0,
        library: Any = None,
        root: str | Path = "/",
        clock: Callable[[], float] = time.monotonic,
    ):
        tegra = Path(root) / "etc" / "nv_tegra_release"
        if tegra.exists():
            raise ProbeUnavailable(
                f"{tegra} exists: this is a Jetson board, where NVML reads no power; "
                "use the ina3221 probe (Ina3221Probe) instead"
            )
        self.nvml = library if library is not None else _load_pynvml()
        self.index, self.clock = index, clock
        self._open()
        try:
            self._check_power()
            self._start_energy()
        except ProbeUnavailable:
            self.close()
            raise

    def _open(self) -> None:
        nvml = self.nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as e:
            raise ProbeUnavailable(f"nvmlInit failed ({e}): no NVIDIA driver loaded") from e
        try:
            self.handle = nvml.nvmlDeviceGetHandleByIndex(self.index)
        except nvml.NVMLError as e:
            nvml.nvmlShutdown()
            raise ProbeUnavailable(f"no NVIDIA GPU at index {self.index} ({e})") from e
        name = nvml.nvmlDeviceGetName(self.handle)
        self.name: str = name.decode() if isinstance(name, bytes) else str(name)

    def _check_power(self) -> None:
        try:
            self.nvml.nvmlDeviceGetPowerUsage(self.handle)
        except self.nvml.NVMLError as e:
            raise ProbeUnavailable(
                f"NVML cannot read the power of {self.name} ({e}); on a Jetson board NVML "
                "reads no power: use the ina3221 probe (Ina3221Probe) instead"
            ) from e

    def _start_energy(self) -> None:
        try:
            self._start_mj = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.energy_source = ENERGY_COUNTER
        except self.nvml.NVMLError:  # NOT_SUPPORTED before Volta
            self.energy_source = POWER_INTEGRAL
            self._joules = 0.0
            self._last = (self.clock(), self.power_w())

    def power_w(self) -> float:
        """Board power now (NVML's ~1 s average on recent GPUs), watts."""
        try:
            return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0
        except self.nvml.NVMLError as e:
            raise ProbeUnavailable(f"NVML power read of {self.name} failed ({e})") from e

    def read_joules(self) -> float:
        """GPU energy since the probe was made, joules: from the energy counter, or, without
        one, power integrated between reads (trapezoids; read often for a fair figure)."""
        if self.energy_source == ENERGY_COUNTER:
            try:
                now = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            except self.nvml.NVMLError as e:
                raise ProbeUnavailable(f"NVML energy read of {self.name} failed ({e})") from e
            return (now - self._start_mj) / 1000.0
        t, p = self.clock(), self.power_w()
        t0, p0 = self._last
        self._joules += 0.5 * (p0 + p) * (t - t0)
        self._last = (t, p)
        return self._joules

    def close(self) -> None:
        """Release NVML (each probe holds one nvmlInit)."""
        if self.handle is not None:
            self.handle = None
            self.nvml.nvmlShutdown()

    def __enter__(self) -> NvmlProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NvmlProbe(index={self.index}, name={self.name!r}, energy={self.energy_source})"
