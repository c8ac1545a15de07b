"""The policy engine: from device state and the policy file's budgets, pick the operating point
for the next requests that maximises expected accuracy; with hysteresis, energy pacing over time,
and saying why."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ponder._core.errors import ConfigError
from ponder.runtime._policy.cost_model import CostModel, Prediction
from ponder.runtime._policy.decision import Decision, Why
from ponder.runtime._policy.pacing import Pacer, round_down
from ponder.runtime._policy.points import ExitDistribution, OperatingPoint
from ponder.runtime._policy.snapshot import Limits, Snapshot
from ponder.runtime._policy.spec import PolicyRule, PolicySpec
from ponder.runtime._telemetry.state import DeviceState

__all__ = ["Policy", "baseline_points"]

_UNKNOWN = DeviceState()
_INF = math.inf


def baseline_points(num_exits: int) -> list[OperatingPoint]:
    """The two static baselines a policy is compared with: the full model, and first exit only."""
    return [OperatingPoint.full(num_exits), OperatingPoint.earliest(num_exits)]


class Policy:
    """Chooses among `points` with predictions from `cost_model` under `spec` (no budgets when
    None). Call decide(state) before a request (or batch) and observe() after each stage call.

    With the spec's [pacing], `pacer` charges each observed call's energy (measured, else the
    cost model's estimate for its rows) to the current window, counts the requests (stage-0
    rows), and caps energy per inference at the window's allowance, rounded down to 3
    significant digits so that decisions stay cached while it barely moves."""

    def __init__(
        self,
        points: Sequence[OperatingPoint],
        cost_model: CostModel,
        spec: PolicySpec | None = None,
        num_stages: int | None = None,
    ):
        self.points, self.cost_model = list(points), cost_model
        self.spec = PolicySpec() if spec is None else spec
        n = cost_model.num_stages
        if num_stages is not None and num_stages != n:
            raise ConfigError(
                f"num_stages={num_stages} but the cost model has {n} stages; build both from one bundle"
            )
        if not self.points or not all(isinstance(p, OperatingPoint) for p in self.points):
            raise ConfigError(
                "a Policy needs a non-empty list of OperatingPoint (see `operating_points(manifest)`)"
            )
        if self.spec.needs_energy and not cost_model.has_energy:
            raise ConfigError(
                "the policy caps energy, but the cost model has no energy figures: profile on a "
                "device with an energy probe (`ponder profile BUNDLE`), or pass CostModel(power_w=...)"
            )
        self._precompute(n)
        self.rules: tuple[PolicyRule, ...] = (*self.spec.rules, self.spec.default)
        self._current: int | None = None
        self._active = len(self.rules) - 1  # the default
        self._since, self._speed = 0, 1.0
        self._snap: Snapshot | None = None
        self._key: tuple | None = None
        self._cached: Decision | None = None
        self.pacer = None if self.spec.pacing is None else Pacer(self.spec.pacing)

    def _precompute(self, n: int) -> None:
        # P=points, S=stages; every point's mean cost is ExitDistribution.expected, done for all
        # points at once: reach @ stage costs
        dists = [ExitDistribution.of(p, n) for p in self.points]
        self._reach = np.array([d.reach for d in dists])  # [P, S]
        q = self.spec.latency_quantile
        last = np.array([d.quantile_stage(q) for d in dists])  # [P]
        worst = (np.arange(n)[None, :] <= last[:, None]).astype(float)  # [P, S]
        m = len(self.points)
        self._reach_and_worst = np.zeros((2 * m, 2 * n))  # [2P, 2S] = blockdiag(reach, worst)
        self._reach_and_worst[:m, :n], self._reach_and_worst[m:, n:] = self._reach, worst
        self._lat_and_energy = np.zeros((3 * m, 3 * n))  # [3P, 3S] = blockdiag(reach, worst, reach)
        self._lat_and_energy[: 2 * m, : 2 * n] = self._reach_and_worst
        self._lat_and_energy[2 * m :, 2 * n :] = self._reach
        self._acc = [-_INF if p.accuracy is None else p.accuracy for p in self.points]
        self._by_accuracy = sorted(range(len(self.points)), key=lambda i: -self._acc[i])
        flops = self.cost_model.stage_flops
        derived = None if flops is None else (self._reach @ np.asarray(flops) / sum(flops)).tolist()
        self._flops = [
            p.flops_fraction if p.flops_fraction is not None or not derived else derived[i]
            for i, p in enumerate(self.points)
        ]

    @property
    def current(self) -> OperatingPoint | None:
        """The point of the last decision (None before the first)."""
        return None if self._current is None else self.points[self._current]

    def observe(
        self,
        stage: int,
        latency_ms: float,
        energy_mj: float | None = None,
        batch: int = 1,
        speed: float | None = None,
    ) -> None:
        """Feed one measured stage call to the cost model; `speed` defaults to that of the
        state given to the last decide(), so throttled times are not counted twice."""
        self.cost_model.observe(
            stage, latency_ms, energy_mj, batch, self._speed if speed is None else speed
        )
        if self.pacer is not None:
            spent = self._estimate_mj(stage, batch) if energy_mj is None else energy_mj
            self.pacer.spend(spent, batch if stage == 0 else 0)

    def spend(self, energy_mj: float, requests: float = 1.0) -> None:
        """Charge energy spent outside observe() (an offloaded request's radio time, requests
        a simulator serves in aggregate) to the pacing window; nothing without [pacing]."""
        if self.pacer is not None:
            self.pacer.spend(energy_mj, requests)

    def _estimate_mj(self, stage: int, batch: int) -> float:
        try:
            per_row = self.cost_model.stage_energy_mj()
        except ConfigError:  # other stages' costs are not known yet
            return 0.0
        return 0.0 if per_row is None else per_row[stage] * batch

    def observe_stages(self, result: Any) -> None:
        """Feed every stage call of an engine `Result` to the cost model."""
        calls = zip(result.stage_index, result.stage_rows, result.stage_ms,
                    result.extra["stage_mj"], strict=True)  # fmt: skip
        for k, rows, ms, mj in calls:
            self.observe(k, ms, mj, batch=rows)

    def observe_request(self, overhead_ms: float, step_overhead_ms: float | None = None) -> None:
        """Feed one request's engine overheads to the cost model (see CostModel)."""
        self.cost_model.observe_request(overhead_ms, step_overhead_ms)

    def decide(self, state: DeviceState | None = None) -> Decision:
        """The operating point for the next request(s) under `state` (None: nothing known)."""
        state = _UNKNOWN if state is None else state
        speed = state.speed
        if not speed > 0:
            raise ConfigError(f"DeviceState.speed must be > 0 (1.0 = full clock), got {speed!r}")
        self._speed = speed
        cap = _INF
        if self.pacer is not None:
            self.pacer.tick(state.time_s, state.charging)
            cap = round_down(self.pacer.allowance_mj())
        dwell_ok = self._since >= self.spec.min_requests
        key = _key(state, self.cost_model.version, self._current, self._active, dwell_ok, cap)
        if key == self._key:  # nothing the choice depends on has changed
            self._since += 1
            return self._cached
        return self._decide(state, dwell_ok, cap)

    def _snapshot(self) -> Snapshot:
        if self._snap is None or self._snap.version != self.cost_model.version:
            self._snap = Snapshot(
                self.cost_model, self._reach_and_worst, self._lat_and_energy, self._acc
            )
        return self._snap

    def _match(self, state: DeviceState) -> int:
        """Index of the first rule that holds (the default last); the active one gets the bands."""
        b, t, ch = state.battery_percent, state.temperature_c, state.charging
        bb, tb = self.spec.battery_band, self.spec.temperature_band
        for i, r in enumerate(self.rules[:-1]):
            band = i == self._active
            if r.holds(b, ch, t, bb if band else 0.0, tb if band else 0.0):
                return i
        return len(self.rules) - 1

    def _decide(self, state: DeviceState, dwell_ok: bool, cap: float) -> Decision:
        snap, previous, was_active = self._snapshot(), self._current, self._active
        self._active = ri = self._match(state)
        rule = self.rules[ri]
        lat_lim = (
            _INF if rule.latency_ms is None else rule.latency_ms * state.speed
        )  # at full clock
        limits = (
            lat_lim,
            min(rule.energy_limit(snap.full_en), cap),
            -_INF if rule.min_accuracy is None else rule.min_accuracy,
        )
        if not snap.known and (limits[0] < _INF or limits[1] < _INF):
            best, feasible, how = snap.cheapest, False, "unknown"
        else:
            best, feasible, how = self._best(snap, limits)
        chosen, kept = self._hysteresis(snap, best, limits, how, dwell_ok)
        changed = chosen != previous
        self._current, self._since = chosen, 1 if changed else self._since + 1
        why = Why(
            self.points,
            self.rules,
            self.spec,
            self.cost_model,
            snap,
            state,
            ri,
            was_active,
            previous,
            best,
            chosen,
            how,
            kept,
            limits,
            None if self.pacer is None else self.pacer.reading(cap),
        )
        budgets = {
            "latency_ms": rule.latency_ms,
            "energy_mj": None if limits[1] == _INF else limits[1],
            "min_accuracy": rule.min_accuracy,
        }
        prediction = self._predict(snap, chosen, state.speed)
        d = Decision(self.points[chosen], prediction, rule.name, budgets, feasible, changed, why)
        dwell = self._since >= self.spec.min_requests
        self._key = _key(state, snap.version, chosen, ri, dwell, cap)
        self._cached = replace(d, changed=False) if changed else d
        return d

    def _best(self, s: Snapshot, limits: Limits) -> tuple[int, bool, str]:
        """(index, feasible, how): how is "accuracy", "cost" (under a floor), "floor" (the
        floor cannot be met within the budgets) or "cheapest" (the budgets cannot be met)."""
        lat_lim, en_lim, floor = limits
        if floor > -_INF:
            for i in s.by_cost:
                if s.meets(i, limits):
                    return i, True, "cost"
        best, acc, worst, en, mean = None, self._acc, s.worst_lat, s.mean_en, s.mean_lat
        for i in self._by_accuracy:  # most accurate first; among equals, the cheaper
            if best is not None and acc[i] != acc[best]:
                break
            cheaper = best is None or (mean[i], en[i]) < (mean[best], en[best])
            if worst[i] <= lat_lim and en[i] <= en_lim and cheaper:
                best = i
        if best is not None:
            return best, floor == -_INF, "accuracy" if floor == -_INF else "floor"
        return s.cheapest, False, "cheapest"

    def _hysteresis(
        self, s: Snapshot, best: int, limits: Limits, how: str, dwell_ok: bool
    ) -> tuple[int, str | None]:
        """Keep the current point unless it breaks a budget or `best` gains more than the margin."""
        cur = self._current
        if cur is None or cur == best or how == "unknown" or not s.meets(cur, limits):
            return best, None
        if how == "cost":
            gain = s.cost[cur] - s.cost[best]
            small = not gain > self.spec.cost_margin * s.cost[cur]
        else:
            small = not self._acc[best] - self._acc[cur] > self.spec.accuracy_margin
        if small:
            return cur, "margin"
        return (best, None) if dwell_ok else (cur, "dwell")

    def _predict(self, s: Snapshot, i: int, speed: float) -> Prediction:
        p, nan = self.points[i], math.nan
        return Prediction(
            accuracy=p.accuracy,
            mean_latency_ms=s.mean_lat[i] / speed if s.known else nan,
            worst_latency_ms=s.worst_lat[i] / speed if s.known else nan,
            mean_energy_mj=s.mean_en[i] if s.has_energy else None,
            flops_fraction=self._flops[i],
        )


def _key(
    state: DeviceState, version: int, current: int | None, rule: int, dwell: bool, cap: float
) -> tuple:
    """Everything a decision depends on (cap: the pacing allowance): equal keys, equal decisions."""
    b, ch, t, v = state.battery_percent, state.charging, state.temperature_c, state.speed
    return (b, ch, t, v, version, current, rule, dwell, cap)
