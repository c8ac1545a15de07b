"""Energy pacing over time: a policy file's [pacing] budget ("3% of the battery an hour") turned
into an energy allowance per inference, from the energy spent so far in the window and the
requests expected in the rest of it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ponder._core.errors import ConfigError
from ponder.runtime._policy.spec import EnergyPacing

__all__ = ["PaceReading", "Pacer"]

RATE_WINDOWS = 12  # the request rate's EWMA time constant is window_s / 12 (5 min an hour) ...
RATE_TAU_MAX_S = 300.0  # ... and at most 5 min, so that a burst shows within minutes


@dataclass(frozen=True)
class PaceReading:
    """The pacer at one decision: the window's budget and spending (mJ), the seconds left in
    it, the request rate (per s; None before any is known), and the allowance per inference
    (mJ; inf while charging, where the battery pays nothing)."""

    pacing: EnergyPacing
    spent_mj: float
    left_s: float
    rate: float | None
    allowance_mj: float
    charging: bool

    @property
    def budget_mj(self) -> float:
        return self.pacing.budget_mj

    @property
    def spent_percent(self) -> float:
        """The spending as a share of the whole battery, percent."""
        return self.spent_mj / self.budget_mj * self.pacing.battery_percent


class Pacer:
    """Tracks inference energy per window of `pacing.window_s` seconds, the first window
    starting at the first clock reading (DeviceState.time_s, so simulations and replays pace in
    their own time). `tick(time_s, charging)` before each decision; `spend()` after the work.

    allowance = unspent budget / max(1, requests expected in the rest of the window), the rate
    being a time-weighted EWMA of requests per second; 0 once the budget is spent. Energy spent
    while charging is not counted (it comes from the charger)."""

    def __init__(self, pacing: EnergyPacing):
        self.pacing = pacing
        self.tau_s = min(pacing.window_s / RATE_WINDOWS, RATE_TAU_MAX_S)
        self.start_s: float | None = None  # the current window's start
        self.now_s = 0.0
        self.spent_mj = 0.0  # in the current window
        self.rate: float | None = None  # requests per second
        self.charging = False
        self._pending = 0.0  # requests since the last tick that moved the clock
        self._since_s: float | None = None  # when the rate last moved

    def tick(self, time_s: float, charging: bool | None = None) -> None:
        """Move the clock to `time_s`: fold the requests since the last tick into the rate and
        start a new window (spending 0) when the current one is over."""
        if not math.isfinite(time_s):
            raise ConfigError(f"pacing needs a finite DeviceState.time_s, got {time_s!r}")
        window = self.pacing.window_s
        if self.start_s is None or time_s < self.start_s:  # first reading, or a clock reset
            self.start_s, self.spent_mj, self._since_s = time_s, 0.0, time_s
        elif time_s >= self.start_s + window:
            self.start_s += (time_s - self.start_s) // window * window
            self.spent_mj = 0.0
        dt = time_s - self._since_s
        if dt > 0:
            decay = math.exp(-dt / self.tau_s)
            fresh = self._pending / dt
            self.rate = fresh if self.rate is None else self.rate * decay + fresh * (1 - decay)
            self._pending, self._since_s = 0.0, time_s
        self.now_s, self.charging = time_s, bool(charging)

    def spend(self, energy_mj: float, requests: float = 0.0) -> None:
        """Charge `energy_mj` (and `requests` served with it) to the current window."""
        if not (energy_mj >= 0 and requests >= 0) or math.isinf(energy_mj + requests):
            raise ConfigError(
                f"spend() needs energy_mj >= 0 and requests >= 0, got {energy_mj!r}, {requests!r}"
            )
        self._pending += requests
        if not self.charging:
            self.spent_mj += energy_mj

    @property
    def left_s(self) -> float:
        start = self.now_s if self.start_s is None else self.start_s
        return start + self.pacing.window_s - self.now_s

    def allowance_mj(self) -> float:
        """Energy per inference the window can still afford, mJ (inf while charging)."""
        if self.charging:
            return math.inf
        unspent = max(0.0, self.pacing.budget_mj - self.spent_mj)
        expected = (self.rate or 0.0) * self.left_s
        return unspent / max(1.0, expected)

    def reading(self, allowance_mj: float) -> PaceReading:
        return PaceReading(
            self.pacing, self.spent_mj, self.left_s, self.rate, allowance_mj, self.charging
        )


def round_down(x: float, digits: int = 3) -> float:
    """`x` cut to `digits` significant digits (never up): an allowance a cached decision can
    share with its neighbours, and one never looser than the pacer's."""
    if not 0 < x < math.inf:
        return x
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    return math.floor(x * scale * (1 + 1e-12)) / scale
