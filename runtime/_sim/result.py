"""What `simulate` returns: one row per simulated step for each strategy, summaries, and the
lifetime gained against always-full. Every figure here is SIMULATED and labelled so."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import numpy as np

from ponder.runtime._sim.windows import pacing_windows

if TYPE_CHECKING:
    from ponder.runtime._policy.decision import Decision
    from ponder.runtime._policy.points import ExitDistribution, OperatingPoint
    from ponder.runtime._policy.spec import PolicySpec
    from ponder.runtime._sim.device import RequestsRun, SimulatedDevice
    from ponder.runtime._sim.simulate import Scenario
    from ponder.runtime._telemetry.state import DeviceState

__all__ = ["SimulationResult", "StrategyRun"]

COLUMNS = (
    "time_h",
    "battery_percent",
    "point",
    "accuracy",
    "energy_mj",
    "mean_latency_ms",
    "worst_latency_ms",
    "speed",
    "temperature_c",
    "charging",
    "requests",
    "served",
)
ACCURACY_LABEL = "expected accuracy (calibration split)"
MAX_SWITCHES = 100  # switches kept with their reasons; the count is kept in full


class StrategyRun:
    """One strategy's replay: a row per step (`series`, columnar; time_h is the step's end in
    hours since the trace start, NaN figures where nothing was served) and running totals."""

    def __init__(self, name: str, start_s: float):
        self.name, self.start_s = name, start_s
        self.series: dict[str, list] = {c: [] for c in COLUMNS}
        self.lifetime_s: float | None = None  # first time the battery hit 0
        self.served = self.dropped_battery = self.dropped_busy = self.dead_s = 0.0
        self.accuracy_sum = self.energy_mj_sum = 0.0
        self.accuracy_known = True
        self._lat: list[float] = []  # per-request latency of each (step, exit stage) ...
        self._weight: list[float] = []  # ... and how many requests it stands for
        self.switches: list[dict[str, Any]] = []
        self.switch_count = 0
        self.start_percent: float | None = None  # the battery before the first step

    def add(
        self,
        t0: float,
        dt: float,
        state: DeviceState,
        point: OperatingPoint | None,
        decision: Decision | None,
        requests: float,
        done: RequestsRun,
        dist: ExitDistribution | None,
        device: SimulatedDevice,
    ) -> None:
        """Record one step (`state` from its start, `device` at its end); `dist`: where the
        point's requests leave (None: nothing was run)."""
        if self.start_percent is None:
            self.start_percent = state.battery_percent
        if done.alive_s < dt and self.lifetime_s is None:
            self.lifetime_s = t0 + done.alive_s - self.start_s
        served = requests * done.served_fraction
        self.served += served
        self.dropped_battery += requests * (1 - done.alive_s / dt)
        self.dead_s += dt - done.alive_s
        self.dropped_busy += max(0.0, requests * done.alive_s / dt - served)
        cum = list(accumulate(done.stage_latency_ms))
        exits = [0.0] * len(cum) if dist is None else list(dist.shares)
        mean_lat = 0.0 if dist is None else dist.expected(done.stage_latency_ms)
        energy = 0.0 if dist is None else dist.expected(done.stage_energy_mj)
        acc = None if point is None else point.accuracy
        if served > 0:
            self._count(served, acc, energy, exits, cum)
        if decision is not None and decision.changed:
            self._switch(t0, state, decision)
        nan, worst = math.nan, cum[dist.last_stage] if dist else math.nan
        row = (
            (t0 + dt - self.start_s) / 3600,
            device.battery.percent,
            None if point is None else point.name,
            nan if acc is None or not served else acc,
            energy if served else nan,
            mean_lat if served else nan,
            worst if served else nan,
            done.speed,
            device.thermal.temperature_c,
            device.charging,
            requests,
            served,
        )
        for c, v in zip(COLUMNS, row, strict=True):
            self.series[c].append(v)

    def _count(
        self, served: float, acc: float | None, energy: float, exits: list[float], cum: list[float]
    ) -> None:
        self.accuracy_known &= acc is not None
        self.accuracy_sum += served * (acc or 0.0)
        self.energy_mj_sum += served * energy
        for e, c in zip(exits, cum, strict=True):
            if e > 0:
                self._lat.append(c)
                self._weight.append(served * e)

    def _switch(self, t0: float, state: DeviceState, d: Decision) -> None:
        self.switch_count += 1
        if len(self.switches) < MAX_SWITCHES:
            self.switches.append(
                {
                    "time_h": (t0 - self.start_s) / 3600,
                    "battery_percent": state.battery_percent,
                    "charging": state.charging,
                    "point": d.point.name,
                    "rule": d.rule_name,
                    "reasons": [r for r in d.reasons if not r.startswith("costs:")],
                }
            )

    def latency_quantile(self, q: float) -> float:
        """The q-quantile of per-request latency over every served request (NaN if none)."""
        if not self._weight:
            return math.nan
        order = np.argsort(self._lat)
        cum = np.cumsum(np.asarray(self._weight)[order])
        i = int(np.searchsorted(cum, q * cum[-1]))
        return float(np.asarray(self._lat)[order][min(i, len(order) - 1)])

    def summary(self) -> dict[str, Any]:
        s, served = self.series, self.served
        total = served + self.dropped_battery + self.dropped_busy
        acc = self.accuracy_sum / served if served and self.accuracy_known else None
        return {
            "strategy": self.name,
            "lifetime_h": None if self.lifetime_s is None else self.lifetime_s / 3600,
            "survived": self.lifetime_s is None,
            "hours_without_battery": self.dead_s / 3600,
            "final_battery_percent": s["battery_percent"][-1],
            "min_battery_percent": min(s["battery_percent"]),
            "mean_expected_accuracy": acc,
            "accuracy_counting_dropped_as_wrong": None if acc is None else acc * served / total,
            "energy_per_inference_mj": self.energy_mj_sum / served if served else None,
            "latency_p50_ms": self.latency_quantile(0.5),
            "latency_p95_ms": self.latency_quantile(0.95),
            "requests": total,
            "served": served,
            "dropped_battery_empty": self.dropped_battery,
            "dropped_busy": self.dropped_busy,
            "peak_temperature_c": max(s["temperature_c"]),
            "min_speed": min(s["speed"]),
            "switches": self.switch_count,
        }

    def to_dict(self) -> dict[str, Any]:
        summary = {k: _round(v) for k, v in self.summary().items()}
        series = {c: [_round(v) for v in vs] for c, vs in self.series.items()}
        return {**summary, "switch_log": self.switches, "series": series}


def _round(v: Any) -> Any:
    """Six significant digits (keeps the JSON small); NaN as None."""
    if isinstance(v, float):
        return None if math.isnan(v) else float(f"{v:.6g}")
    return v


@dataclass
class SimulationResult:
    """A simulated replay: the scenario, the trace, the policy, and one StrategyRun each for
    "policy", "always full" and "always earliest" (in that order; with "policy without pacing"
    after "policy" when the policy has [pacing])."""

    scenario: Scenario
    trace: str
    trace_synthetic: bool
    policy: PolicySpec
    runs: list[StrategyRun]
    notes: list[str] = field(default_factory=list)
    simulated: bool = True

    def run(self, name: str) -> StrategyRun:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(f"no strategy {name!r}; have {[r.name for r in self.runs]}")

    @property
    def duration_h(self) -> float:
        return self.run("policy").series["time_h"][-1]

    def pacing(self) -> dict[str, Any] | None:
        """Per pacing window, each strategy's inference energy against the budget, battery
        drain and accuracy (see `pacing_windows`); None when the policy has no [pacing]."""
        if self.policy.pacing is None:
            return None
        return pacing_windows(self.runs, self.policy.pacing)

    def comparison(self) -> dict[str, Any]:
        """Lifetime gained by the policy against always-full, and the accuracy it cost."""
        p, f = self.run("policy").summary(), self.run("always full").summary()
        if f["survived"]:
            gained = None
        elif p["survived"]:
            gained = self.duration_h - f["lifetime_h"]  # at least: the policy outlived the trace
        else:
            gained = p["lifetime_h"] - f["lifetime_h"]
        cost = None
        if p["mean_expected_accuracy"] is not None and f["mean_expected_accuracy"] is not None:
            cost = (f["mean_expected_accuracy"] - p["mean_expected_accuracy"]) * 100
        return {
            "lifetime_gained_h": gained,
            "lifetime_gained_is_lower_bound": gained is not None and p["survived"],
            "lifetime_gained_percent": None if gained is None else gained / f["lifetime_h"] * 100,
            "accuracy_cost_points": cost,
            "full_survived": f["survived"],
            "simulated": True,
        }

    def headline(self) -> str:
        """One sentence: lifetime gained vs always-full at the accuracy cost (simulated)."""
        c, f = self.comparison(), self.run("always full").summary()
        cost = (
            "unknown" if c["accuracy_cost_points"] is None else f"{c['accuracy_cost_points']:.2f}"
        )
        tail = f"at an accuracy cost of {cost} percentage points of {ACCURACY_LABEL}, simulated"
        if c["lifetime_gained_h"] is None:
            low = (f["min_battery_percent"], min(self.run("policy").series["battery_percent"]))
            return (
                f"always-full survived the trace too (lowest battery: always-full "
                f"{low[0]:.1f}%, policy {low[1]:.1f}%): no lifetime to gain; "
                f"{tail}"
            )
        bound = c["lifetime_gained_is_lower_bound"]
        at_least = "at least " if bound else ""
        tail += "; the policy's battery never ran out in the trace" if bound else ""
        return (
            f"lifetime gained vs always-full: {at_least}+{c['lifetime_gained_h']:.2f} h "
            f"(+{c['lifetime_gained_percent']:.0f}%) {tail}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "simulated": True,
            "what": "SIMULATED replay of a usage trace; nothing here is measured",
            "accuracy_label": ACCURACY_LABEL,
            "scenario": self.scenario.to_dict(),
            "assumptions": [*self.scenario.describe(), *self.notes],
            "trace": self.trace,
            "trace_synthetic": self.trace_synthetic,
            "policy": self.policy.to_dict(),
            **({} if self.policy.pacing is None else {"pacing": self.pacing()}),
            "comparison": self.comparison(),
            "headline": self.headline(),
            "strategies": [r.to_dict() for r in self.runs],
        }
