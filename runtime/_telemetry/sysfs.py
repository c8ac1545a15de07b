"""Device telemetry from Linux sysfs, torch-free: battery state from `power_supply` and CPU
package energy from Intel RAPL (`powercap`), each probe optional and saying why when it is not.

Units as the kernel writes them (Documentation/ABI/testing/sysfs-class-power and -powercap):
power_supply reports µV, µA, µW, µWh and µAh, `capacity` in percent; RAPL `energy_uj` counts
µJ and wraps to zero after `max_energy_range_uj`; hwmon (Jetson INA3221 rails) reports mV and
mA. Every probe takes a `root` so tests can point
it at recorded sysfs trees.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ponder._core.errors import PonderError

__all__ = ["BatteryState", "PowerSupplyProbe", "ProbeUnavailable", "RaplProbe"]

SYS = Path("/sys")


class ProbeUnavailable(PonderError, RuntimeError):
    """A probe cannot read what it measures here (no battery, no RAPL, no NVML, no permission);
    the message says why and, where something can be done, what."""


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except PermissionError as e:
        raise ProbeUnavailable(f"{path} is not readable by this user (often root-only)") from e
    except OSError as e:
        raise ProbeUnavailable(f"cannot read {path}: {e.strerror or e}") from e


def _int(path: Path) -> int:
    text = _read(path)
    try:
        return int(text)
    except ValueError as e:
        raise ProbeUnavailable(f"{path} holds {text!r}, not an integer") from e


@dataclass(frozen=True)
class BatteryState:
    percent: float  # 0..100
    charging: bool  # status "Charging" or "Full" (on external power)
    power_w: float | None  # drawn (discharging) or taken (charging), watts; None if not reported
    energy_wh: float | None  # energy left, watt-hours; None if not reported


class PowerSupplyProbe:
    """The first battery under `<root>/class/power_supply` (type "Battery")."""

    def __init__(self, root: str | Path = SYS):
        supplies = Path(root) / "class" / "power_supply"
        batteries = [
            d
            for d in sorted(supplies.glob("*"))
            if (d / "type").is_file() and _read(d / "type") == "Battery"
        ]
        if not batteries:
            raise ProbeUnavailable(
                f"no battery under {supplies} (a desktop, a VM or a board on mains)"
            )
        self.path = batteries[0]

    def read(self) -> BatteryState:
        d = self.path
        status = _read(d / "status") if (d / "status").exists() else "Unknown"
        return BatteryState(
            percent=float(_int(d / "capacity")),
            charging=status in ("Charging", "Full"),
            power_w=self._power_w(),
            energy_wh=_micro(d / "energy_now"),
        )

    def _power_w(self) -> float | None:
        """power_now (µW) where the driver has it, else voltage_now (µV) × current_now (µA).
        Some drivers sign the current by direction; the magnitude is what is drawn or taken."""
        d = self.path
        if (d / "power_now").exists():
            return abs(_int(d / "power_now")) / 1e6
        if (d / "current_now").exists() and (d / "voltage_now").exists():
            return abs(_int(d / "current_now")) * _int(d / "voltage_now") / 1e12
        return None


def _micro(path: Path) -> float | None:
    return _int(path) / 1e6 if path.exists() else None


class RaplProbe:
    """CPU package energy from `<root>/class/powercap/intel-rapl:<n>` (package domains only),
    in joules, with the counter's wrap-around handled between reads."""

    def __init__(self, root: str | Path = SYS):
        powercap = Path(root) / "class" / "powercap"
        self.domains = sorted(d for d in powercap.glob("intel-rapl:*") if d.name.count(":") == 1)
        if not self.domains:
            raise ProbeUnavailable(
                f"no Intel RAPL package domain under {powercap} (not Intel, or a VM)"
            )
        self.ranges = [_int(d / "max_energy_range_uj") for d in self.domains]
        self.last = [_int(d / "energy_uj") for d in self.domains]  # raises if root-only
        self.total_uj = 0

    def read_joules(self) -> float:
        """Energy used by all packages since the probe was made, in joules."""
        for i, d in enumerate(self.domains):
            now = _int(d / "energy_uj")
            step = now - self.last[i]
            if step < 0:  # the counter passed max_energy_range_uj and restarted from zero
                step += self.ranges[i] + 1
            self.total_uj += step
            self.last[i] = now
        return self.total_uj / 1e6

    def power_w(self, seconds: float = 0.1) -> float:
        """Mean package power over `seconds`, watts."""
        start, t0 = self.read_joules(), time.perf_counter()
        time.sleep(seconds)
        return (self.read_joules() - start) / (time.perf_counter() - t0)


class Ina3221Probe:
    """Jetson power rails from the INA3221 monitors under `<root>/class/hwmon` (name
    "ina3221"): per labelled channel, voltage `in<i>_input` (mV) times current `curr<i>_input`
    (mA). NVML power does not work on Jetson; these rails are what tegrastats reads."""

    def __init__(self, root: str | Path = SYS):
        hwmon = Path(root) / "class" / "hwmon"
        self.channels: dict[str, tuple[Path, Path]] = {}
        for device in sorted(hwmon.glob("hwmon*")):
            if not (device / "name").is_file() or _read(device / "name") != "ina3221":
                continue
            for label in sorted(device.glob("in*_label")):
                i = label.name[2:].removesuffix("_label")
                volts, amps = device / f"in{i}_input", device / f"curr{i}_input"
                if volts.exists() and amps.exists():
                    self.channels[_read(label)] = (volts, amps)
        if not self.channels:
            raise ProbeUnavailable(f"no INA3221 power rail under {hwmon} (not a Jetson board)")

    def read_watts(self) -> dict[str, float]:
        """Power per rail label (for example VDD_IN, the whole module), watts."""
        return {name: _int(v) * _int(a) / 1e6 for name, (v, a) in self.channels.items()}
