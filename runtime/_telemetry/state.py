"""What a policy knows about the device at one moment: battery, power, temperature, throttling."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeviceState"]


@dataclass(frozen=True)
class DeviceState:
    """A snapshot of the device. Every field may be unknown (None) on a device without that
    probe; `simulated` marks states produced by the simulated device or a replayed trace.

    battery_percent: 0..100; charging: on external power; power_w: measured draw;
    temperature_c: die or skin temperature; speed: 1.0 = full clock, 0.5 = stages take twice
    as long (thermal throttling); time_s: seconds since the start of the run or trace.
    """

    battery_percent: float | None = None
    charging: bool | None = None
    power_w: float | None = None
    temperature_c: float | None = None
    speed: float = 1.0
    time_s: float = 0.0
    simulated: bool = False
