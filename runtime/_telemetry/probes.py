"""The telemetry probe registry: list the probes, find which work on this device (and why the
others do not), and read one `DeviceState` from whatever is there."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ponder._core.registry import Registry
from ponder.runtime._telemetry.nvml import NvmlProbe
from ponder.runtime._telemetry.state import DeviceState
from ponder.runtime._telemetry.sysfs import (
    SYS,
    Ina3221Probe,
    PowerSupplyProbe,
    ProbeUnavailable,
    RaplProbe,
)

__all__ = ["PROBES", "detect_probes", "list_probes", "make_probe", "read_state"]

log = logging.getLogger(__name__)

# name -> factory(root, **options); `root` is the sysfs root ("/sys" on a device)
PROBES: Registry[Callable[..., Any]] = Registry("telemetry probe")


@PROBES.register("power_supply")
def _power_supply(root: Path) -> PowerSupplyProbe:
    """Battery percent, charging and power from Linux power_supply (laptops, phones, tablets)."""
    return PowerSupplyProbe(root)


@PROBES.register("rapl")
def _rapl(root: Path) -> RaplProbe:
    """CPU package energy from Intel RAPL (powercap); often root-only."""
    return RaplProbe(root)


@PROBES.register("ina3221")
def _ina3221(root: Path) -> Ina3221Probe:
    """Jetson board power rails (VDD_IN is the whole module) from the INA3221 hwmon monitors."""
    return Ina3221Probe(root)


@PROBES.register("nvml")
def _nvml(root: Path, **options: Any) -> NvmlProbe:
    """NVIDIA GPU power and energy from NVML (pip install nvidia-ml-py); not on Jetson."""
    # /etc/nv_tegra_release (the Jetson mark) lives beside sysfs, under the filesystem root
    return NvmlProbe(root=Path(root).parent, **options)


def list_probes() -> dict[str, str]:
    """Every registered probe with a one-line description."""
    return {name: inspect.getdoc(PROBES.get(name)).splitlines()[0] for name in PROBES.names()}


def make_probe(name: str, root: str | Path = SYS, **options: Any) -> Any:
    """Open probe `name` (ConfigError listing the known names if unknown); raises
    ProbeUnavailable with the reason when this device lacks it."""
    return PROBES.get(name)(Path(root), **options)


def detect_probes(
    root: str | Path = SYS,
    names: Iterable[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Try each probe (all by default): name -> the open probe, or a string saying why it is
    unavailable here. `options[name]` are extra arguments for that probe's factory."""
    found: dict[str, Any] = {}
    for name in PROBES.names() if names is None else list(names):
        factory = PROBES.get(name)  # unknown names fail here, before any hardware is touched
        try:
            found[name] = factory(Path(root), **(options or {}).get(name, {}))
        except ProbeUnavailable as e:
            found[name] = str(e)
            log.debug("telemetry probe %s unavailable: %s", name, e)
        except Exception as e:  # optional hardware and drivers fail in many ways; never crash
            found[name] = f"{type(e).__name__}: {e}"
            log.warning("telemetry probe %s failed unexpectedly: %s", name, e, exc_info=True)
    return found


def read_state(
    probes: Mapping[str, Any], clock: Callable[[], float] = time.monotonic
) -> DeviceState:
    """One DeviceState from the open probes in `probes` (as `detect_probes` returns; strings
    are skipped). Battery percent, charging and power come from power_supply; when the battery
    gives no power, the Jetson VDD_IN rail is used, else CPU package (RAPL, a 0.1 s sample)
    plus GPU (NVML) power. `time_s` is `clock()`; temperature is not probed yet."""
    battery = _battery(probes.get("power_supply"))
    power = battery.power_w if battery is not None else None
    if power is None:
        power = _compute_power(probes)
    return DeviceState(
        battery_percent=battery.percent if battery is not None else None,
        charging=battery.charging if battery is not None else None,
        power_w=power,
        time_s=clock(),
    )


def _battery(probe: Any) -> Any:
    if not isinstance(probe, PowerSupplyProbe):
        return None
    try:
        return probe.read()
    except ProbeUnavailable as e:
        log.debug("battery read failed: %s", e)
        return None


def _compute_power(probes: Mapping[str, Any]) -> float | None:
    """VDD_IN (whole Jetson module) if present, else RAPL + NVML, else None."""
    try:
        ina = probes.get("ina3221")
        if isinstance(ina, Ina3221Probe):
            rails = ina.read_watts()
            if "VDD_IN" in rails:
                return rails["VDD_IN"]
        parts = [
            probe.power_w()
            for name in ("rapl", "nvml")
            if isinstance(probe := probes.get(name), (RaplProbe, NvmlProbe))
        ]
    except ProbeUnavailable as e:
        log.debug("power read failed: %s", e)
        return None
    return sum(parts) if parts else None
