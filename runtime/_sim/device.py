"""A SIMULATED device for policy tests and demos: a battery, a first-order thermal model with
throttling, and per-stage latency and power on a simulated clock. Nothing here is measured."""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ponder._core.errors import ConfigError
from ponder.runtime._bundle.costs import CostTable
from ponder.runtime._telemetry.state import DeviceState

__all__ = ["Battery", "RequestsRun", "SimulatedDevice", "StageRun", "ThermalModel"]


@dataclass
class Battery:
    """A simulated battery of `capacity_wh` watt-hours at `percent` (0..100)."""

    capacity_wh: float
    percent: float = 100.0

    def __post_init__(self) -> None:
        if not self.capacity_wh > 0:
            raise ConfigError(f"battery capacity_wh must be > 0, got {self.capacity_wh}")
        if not 0.0 <= self.percent <= 100.0:
            raise ConfigError(f"battery percent must be in 0..100, got {self.percent}")

    def _percent_of(self, joules: float) -> float:
        return joules / (self.capacity_wh * 3600.0) * 100.0

    def drain(self, joules: float) -> None:
        """Take `joules` out; stops at 0%."""
        self.percent = max(0.0, self.percent - self._percent_of(joules))

    def charge(self, joules: float) -> None:
        """Put `joules` in; stops at 100%."""
        self.percent = min(100.0, self.percent + self._percent_of(joules))

    @property
    def empty(self) -> bool:
        return self.percent <= 0.0


@dataclass
class ThermalModel:
    """First-order (RC) simulated thermal model: under constant power P the temperature moves
    toward `ambient_c + P * resistance_c_per_w` with time constant `time_constant_s`. Speed
    falls linearly from 1.0 at `throttle_start_c` to `min_speed` at `throttle_full_c`.

    Defaults are phone-like: 5 W sustained heads for 85 °C and passes 70 °C after ~80 s, so
    the device throttles within minutes; 3 W settles at 61 °C and never throttles.
    """

    ambient_c: float = 25.0
    resistance_c_per_w: float = 12.0
    time_constant_s: float = 60.0
    throttle_start_c: float = 70.0
    throttle_full_c: float = 90.0
    min_speed: float = 0.5
    temperature_c: float | None = None  # None: start at ambient

    def __post_init__(self) -> None:
        if self.resistance_c_per_w < 0 or not self.time_constant_s > 0:
            raise ConfigError("thermal resistance_c_per_w must be >= 0 and time_constant_s > 0")
        if not self.throttle_full_c > self.throttle_start_c:
            raise ConfigError(
                f"throttle_full_c ({self.throttle_full_c}) must be above throttle_start_c "
                f"({self.throttle_start_c})"
            )
        if not 0.0 < self.min_speed <= 1.0:
            raise ConfigError(f"min_speed must be in (0, 1], got {self.min_speed}")
        if self.temperature_c is None:
            self.temperature_c = self.ambient_c

    def step(self, power_w: float, seconds: float) -> None:
        """Advance `seconds` at constant `power_w` (exact for piecewise-constant power)."""
        target = self.ambient_c + power_w * self.resistance_c_per_w
        decay = math.exp(-seconds / self.time_constant_s)
        self.temperature_c = target + (self.temperature_c - target) * decay

    @property
    def speed(self) -> float:
        span = self.throttle_full_c - self.throttle_start_c
        hot = min(1.0, max(0.0, (self.temperature_c - self.throttle_start_c) / span))
        return 1.0 - hot * (1.0 - self.min_speed)


@dataclass(frozen=True)
class StageRun:
    """One simulated stage call: its latency and energy (simulated, never measured)."""

    latency_ms: float
    energy_mj: float
    simulated: bool = True


@dataclass(frozen=True)
class RequestsRun:
    """Many requests served in aggregate over one span (simulated, never measured).

    stage_latency_ms / stage_energy_mj: the mean batch-1 call of each stage at the span's
    clock speed (over many calls the jitter averages out); sampled_latency_ms: one jittered
    call of each stage, what a timer on the device would have measured; served_fraction: share
    of the requests served (below 1 when the stages needed more than the span, or the battery
    ran out part-way); alive_s: seconds of the span before the battery ran out.
    """

    stage_latency_ms: tuple[float, ...]
    stage_energy_mj: tuple[float, ...]
    sampled_latency_ms: tuple[float, ...]
    speed: float
    busy_s: float
    served_fraction: float
    alive_s: float
    simulated: bool = True


def _per_stage(power_w: Sequence[float] | float, stages: int) -> tuple[float, ...]:
    if stages == 0:
        raise ConfigError("stage_latency_ms is empty; give one latency per stage")
    if isinstance(power_w, numbers.Real):
        return (float(power_w),) * stages
    powers = tuple(float(p) for p in power_w)
    if len(powers) != stages:
        raise ConfigError(
            f"stage_power_w has {len(powers)} values for {stages} stages; "
            "give one per stage or a single number"
        )
    return powers


class SimulatedDevice:
    """A SIMULATED device running a staged model on a simulated clock (`time_s`).

    `stage_latency_ms[i]` is stage i at batch 1 and full speed; `stage_power_w` is the whole
    device's power while a stage runs at full clock (one value or one per stage). Models, not
    measurements: latency grows as batch**batch_exponent (0.9 by default: batching helps a
    little); throttling divides speed and multiplies power by `speed` (DVFS lowers clock and
    power together, so energy per stage stays the same while time grows); `noise` is the sigma
    of a lognormal jitter on latency whose median is the base latency, drawn from `seed`.
    While `charging`, the battery takes `charging_power_w` minus what the device draws.
    """

    def __init__(
        self,
        stage_latency_ms: Sequence[float],
        stage_power_w: Sequence[float] | float = 3.0,
        *,
        idle_power_w: float = 0.5,
        battery: Battery | None = None,
        thermal: ThermalModel | None = None,
        charging: bool = False,
        charging_power_w: float = 10.0,
        batch_exponent: float = 0.9,
        noise: float = 0.0,
        seed: int = 0,
    ):
        self.stage_latency_ms = tuple(float(x) for x in stage_latency_ms)
        self.stage_power_w = _per_stage(stage_power_w, len(self.stage_latency_ms))
        if min(self.stage_latency_ms) <= 0:
            raise ConfigError(f"stage latencies must be > 0 ms, got {self.stage_latency_ms}")
        if noise < 0:
            raise ConfigError(f"noise must be >= 0, got {noise}")
        self.idle_power_w, self.charging_power_w = idle_power_w, charging_power_w
        self.battery = battery if battery is not None else Battery(capacity_wh=15.0)
        self.thermal = thermal if thermal is not None else ThermalModel()
        self.charging, self.batch_exponent, self.noise = charging, batch_exponent, noise
        self.rng = random.Random(seed)
        self.time_s = 0.0
        self.last_power_w = idle_power_w

    @classmethod
    def from_cost_table(cls, table: CostTable, power_w: float = 3.0, **kw: Any) -> SimulatedDevice:
        """Base latencies from `table`'s stage medians (turned into batch-1 figures with the
        batch model if the table was measured at a larger batch); per-stage power is
        energy / latency where the table has energy, else `power_w`."""
        exponent = float(kw.get("batch_exponent", 0.9))
        scale = table.batch**exponent
        latency = [s.latency_ms / scale for s in table.stages]
        power = [
            s.energy_mj / s.latency_ms if s.energy_mj and s.latency_ms > 0 else power_w
            for s in table.stages
        ]
        return cls(latency, power, **kw)

    def run_stage(self, index: int, batch: int = 1) -> StageRun:
        """Run stage `index` on `batch` samples: advance the clock, drain, heat."""
        if not 0 <= index < len(self.stage_latency_ms):
            raise ConfigError(
                f"stage index {index} out of range; this device has stages "
                f"0..{len(self.stage_latency_ms) - 1}"
            )
        if batch < 1:
            raise ConfigError(f"batch must be >= 1, got {batch}")
        speed = self.thermal.speed
        latency_ms = self.stage_latency_ms[index] * batch**self.batch_exponent / speed
        if self.noise > 0:
            latency_ms *= self.rng.lognormvariate(0.0, self.noise)
        power = self.stage_power_w[index] * speed
        self._advance(latency_ms / 1000.0, power)
        return StageRun(latency_ms=latency_ms, energy_mj=power * latency_ms)

    def run_requests(self, stage_calls: Sequence[float], seconds: float) -> RequestsRun:
        """Serve many batch-1 requests over `seconds` without simulating each: stage k runs
        `stage_calls[k]` times (fractions allowed) spread over the span at the clock speed of
        its start, and the rest of the span idles. The battery and the thermal model see the
        span's mean power (the RC time constant is far longer than one stage). Requests that
        do not fit in the span, or come after the battery runs out, are not served; a device
        with an empty battery and no charger is off (draws nothing)."""
        if len(stage_calls) != len(self.stage_latency_ms) or min(stage_calls) < 0 or seconds <= 0:
            raise ConfigError(
                f"run_requests needs {len(self.stage_latency_ms)} non-negative call counts (one "
                f"per stage) and seconds > 0; got {list(stage_calls)} and {seconds}"
            )
        speed, mean_jitter = self.thermal.speed, math.exp(self.noise**2 / 2)  # lognormal mean
        lat = [t * mean_jitter / speed for t in self.stage_latency_ms]
        sampled = [
            t * self.rng.lognormvariate(0.0, self.noise) / speed if self.noise > 0 else t / speed
            for t in self.stage_latency_ms
        ]
        energy = [p * speed * t for p, t in zip(self.stage_power_w, lat, strict=True)]  # W·ms = mJ
        busy = sum(c * t for c, t in zip(stage_calls, lat, strict=True)) / 1000.0
        fit = 1.0 if busy <= seconds else seconds / busy
        busy_j = fit * sum(c * e for c, e in zip(stage_calls, energy, strict=True)) / 1000.0
        power = (busy_j + self.idle_power_w * (seconds - busy * fit)) / seconds
        alive = self._alive_s(power, seconds)
        if alive > 0:
            self._advance(alive, power)
        if alive < seconds:
            self._advance(seconds - alive, 0.0)  # off: an empty battery powers nothing
        served = fit * alive / seconds
        return RequestsRun(
            tuple(lat), tuple(energy), tuple(sampled), speed, busy * fit, served, alive
        )

    def _alive_s(self, power_w: float, seconds: float) -> float:
        """Seconds of a span at `power_w` before the battery is empty (`seconds` if never)."""
        if self.battery.empty and not self.charging:
            return 0.0  # already off
        net_out_w = power_w - (self.charging_power_w if self.charging else 0.0)
        if net_out_w <= 0:
            return seconds
        stored_j = self.battery.percent / 100.0 * self.battery.capacity_wh * 3600.0
        return min(seconds, stored_j / net_out_w)

    def idle(self, seconds: float) -> None:
        """Sit idle for `seconds`: idle power, cooling, charging if plugged in."""
        if seconds < 0:
            raise ConfigError(f"idle seconds must be >= 0, got {seconds}")
        self._advance(seconds, self.idle_power_w)

    def _advance(self, seconds: float, power_w: float) -> None:
        net_in_w = (self.charging_power_w if self.charging else 0.0) - power_w
        if net_in_w >= 0:
            self.battery.charge(net_in_w * seconds)
        else:
            self.battery.drain(-net_in_w * seconds)
        self.thermal.step(power_w, seconds)
        self.time_s += seconds
        self.last_power_w = power_w

    def state(self) -> DeviceState:
        """The simulated state now (`simulated=True`); power is that of the latest step."""
        return DeviceState(
            battery_percent=self.battery.percent,
            charging=self.charging,
            power_w=self.last_power_w,
            temperature_c=self.thermal.temperature_c,
            speed=self.thermal.speed,
            time_s=self.time_s,
            simulated=True,
        )

    def describe(self) -> str:
        return (
            f"simulated device: {len(self.stage_latency_ms)} stages, "
            f"{sum(self.stage_latency_ms):.1f} ms at full speed, battery "
            f"{self.battery.percent:.1f}% of {self.battery.capacity_wh:g} Wh"
            f"{' (charging)' if self.charging else ''}, {self.thermal.temperature_c:.1f} °C, "
            f"speed {self.thermal.speed:.2f}, t={self.time_s:.1f} s"
        )

    __str__ = describe

    def __repr__(self) -> str:
        return f"<{self.describe()}>"
