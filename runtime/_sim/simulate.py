"""`simulate`: replay a usage trace on SIMULATED devices under a policy and under the two static
baselines (always full, always earliest), to estimate battery lifetime against accuracy; a policy
with [pacing] is also replayed without it, to show what pacing changes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from itertools import pairwise
from typing import Any

from ponder._core.errors import ConfigError
from ponder.runtime._bundle.costs import CostTable, StageCost
from ponder.runtime._policy.cost_model import CostModel
from ponder.runtime._policy.decision import Decision
from ponder.runtime._policy.points import ExitDistribution, OperatingPoint, operating_points
from ponder.runtime._policy.policy import Policy
from ponder.runtime._policy.spec import PolicyRule, PolicySpec
from ponder.runtime._sim.device import Battery, SimulatedDevice, ThermalModel
from ponder.runtime._sim.result import SimulationResult, StrategyRun
from ponder.runtime._sim.trace import Trace, TracePoint, day_trace
from ponder.runtime._telemetry.state import DeviceState

__all__ = ["Scenario", "default_policy_spec", "simulate", "synthetic_day", "target_table"]

DAY_START_H = 7.0  # the synthetic day starts when the device leaves the charger
_ZERO_OK = ("idle_power_w", "charging_power_w", "noise")


@dataclass(frozen=True)
class Scenario:
    """The assumptions of a simulated run; every one is written into its output.

    slowdown: the target device runs each stage this many times slower than the machine that
    measured the cost table. power_w: the device's draw while a stage runs at full clock;
    idle_power_w: between requests. load_scale multiplies the trace's requests per second.
    step_s: the policy decides at least this often (simulated seconds). noise: lognormal sigma
    of the stage-latency jitter. latency_headroom: the default policy's latency budget is this
    times the full model's latency on the target. Defaults: a small always-on camera wearable.
    """

    slowdown: float = 20.0
    power_w: float = 2.0
    idle_power_w: float = 0.1
    battery_wh: float = 2.0
    charging_power_w: float = 5.0
    start_percent: float = 100.0
    load_scale: float = 1.0
    step_s: float = 60.0
    noise: float = 0.05
    latency_headroom: float = 1.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value, zero_ok = getattr(self, f.name), f.name in _ZERO_OK
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
                at_least = ">= 0" if zero_ok else "> 0"
                raise ConfigError(
                    f"scenario {f.name} must be a finite number {at_least}, got {value!r}"
                )
        if self.start_percent > 100:
            raise ConfigError(
                f"scenario start_percent must be in (0, 100], got {self.start_percent}"
            )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def describe(self) -> list[str]:
        """The assumptions in words, one per line."""
        return [
            f"target device: every stage {self.slowdown:g}× slower than in the cost table "
            f"(--slowdown), drawing {self.power_w:g} W while a stage runs and "
            f"{self.idle_power_w:g} W idle; energy = power × simulated time",
            f"battery {self.battery_wh:g} Wh starting at {self.start_percent:g}%, charger "
            f"{self.charging_power_w:g} W while the trace says charging",
            f"load: the trace's requests/s × {self.load_scale:g}, batch 1; the policy decides "
            f"every {self.step_s:g} simulated s; stage-time jitter lognormal sigma {self.noise:g}",
            "thermal model: " + ", ".join(f"{k} {v:g}" for k, v in _thermal_defaults().items()),
        ]


def _thermal_defaults() -> dict[str, float]:
    return {k: v for k, v in asdict(ThermalModel()).items() if k != "temperature_c"}


def synthetic_day(seed: int = 0) -> Trace:
    """A SYNTHETIC 24 h day from 07:00 (`day_trace` shifted so it starts off the charger, at
    full battery): commute, lunch and evening bursts, back on the charger from 23:00."""
    start = DAY_START_H * 3600.0
    rows = day_trace(hours=DAY_START_H + 24.0, seed=seed).points
    return Trace(tuple(p for p in rows if p.time_s >= start), synthetic=True)


def target_table(table: CostTable, slowdown: float) -> CostTable:
    """`table` as if measured on a device `slowdown` times slower (SIMULATED; measured energy
    is dropped: it belongs to the machine that measured the table, not the target)."""
    stages = tuple(
        StageCost(s.index, s.latency_ms * slowdown, s.latency_p90_ms * slowdown, None)
        for s in table.stages
    )
    device = f"simulated target, {slowdown:g}× slower than: {table.device}"
    return replace(table, device=device, stages=stages, energy_source=None, simulated=True)


def default_policy_spec(
    latency_ms: float,
    full_accuracy: float | None = None,
    *,
    energy_fraction: float = 0.5,
    saver_drop: float = 0.01,
    low_drop: float = 0.03,
) -> PolicySpec:
    """The policy `ponder simulate` runs when given none. On the charger or above 50% battery:
    the most accurate point within `latency_ms` worst case. 20-50%: the least energy within
    `saver_drop` of the full model's accuracy. Below 20% unplugged: at most `energy_fraction`
    of the full model's energy per inference, and the least energy within `low_drop` of its
    accuracy (without `full_accuracy` the floors go and the most accurate point runs)."""

    def floor(drop: float) -> float | None:
        return None if full_accuracy is None else max(0.0, full_accuracy - drop)

    return PolicySpec(
        default=PolicyRule("20-50% battery", latency_ms=latency_ms, min_accuracy=floor(saver_drop)),
        rules=(
            PolicyRule("on the charger", charging=True, latency_ms=latency_ms),
            PolicyRule("plenty of battery", battery_above=50, latency_ms=latency_ms),
            PolicyRule(
                "low battery",
                battery_below=20,
                charging=False,
                latency_ms=latency_ms,
                energy_fraction=energy_fraction,
                min_accuracy=floor(low_drop),
            ),
        ),
    )


def baselines(manifest: Any) -> tuple[OperatingPoint, OperatingPoint, list[str]]:
    """(always full, always earliest, notes) with their expected accuracy from the manifest:
    the full model's is a row's accuracy + accuracy_drop; the earliest is a max_stage-0 row's."""
    rows, n, notes = manifest.operating_points, len(manifest.stages), []
    sums = [
        r["accuracy"] + r["accuracy_drop"]
        for r in rows
        if r.get("accuracy") is not None and r.get("accuracy_drop") is not None
    ]
    full_acc = sums[0] if sums else None
    if full_acc is None:
        known = [r["accuracy"] for r in rows if r.get("accuracy") is not None]
        full_acc = max(known, default=None)
        notes.append(
            "the manifest records no accuracy_drop: the full model's accuracy is taken as "
            f"the best operating point's ({_fmt(full_acc)})"
        )
    first = next((r for r in rows if r.get("max_stage") == 0), None)
    first = first or next((r for r in rows if (r.get("exit_fractions") or [0])[0] == 1), None)
    if first is None:
        notes.append(
            "no operating point leaves every sample at stage 0: always-earliest accuracy unknown"
        )
    flops = [s.cumulative_flops for s in manifest.stages]
    full = replace(
        OperatingPoint.full(n - 1),
        accuracy=full_acc,
        flops_fraction=1.0,
        exit_fractions=(0.0,) * (n - 1) + (1.0,),
    )
    earliest = replace(
        OperatingPoint.earliest(n - 1),
        flops_fraction=flops[0] / flops[-1],
        accuracy=None if first is None else first.get("accuracy"),
        exit_fractions=(1.0,) + (0.0,) * (n - 1),
    )
    return full, earliest, notes


def _fmt(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.4f}"


def _steps(trace: Trace, step_s: float) -> Iterator[tuple[TracePoint, float, float]]:
    """(row in force, start time, length) of each step: every row's span cut into equal steps
    of at most `step_s`; the last row only marks the end."""
    rows = trace.points
    if len(rows) < 2:
        raise ConfigError("a trace to simulate needs at least two rows; the last marks its end")
    for row, after in pairwise(rows):
        span = after.time_s - row.time_s
        k = math.ceil(span / step_s - 1e-9)
        for j in range(k):
            yield row, row.time_s + j * span / k, span / k


def _scaled(trace: Trace, factor: float) -> Trace:
    rows = tuple(replace(p, requests_per_s=p.requests_per_s * factor) for p in trace.points)
    return Trace(rows, synthetic=trace.synthetic)


Chooser = Callable[[DeviceState], tuple[OperatingPoint, Decision | None]]


def _replay(
    run: StrategyRun,
    device: SimulatedDevice,
    trace: Trace,
    step_s: float,
    choose: Chooser,
    policy: Policy | None,
) -> StrategyRun:
    """Step the device through the trace: decide, serve the step's requests in aggregate,
    let the policy observe one simulated call of each stage that ran, record the step."""
    n = len(device.stage_latency_ms)
    for row, t0, dt in _steps(trace, step_s):
        device.charging = row.charging
        if row.ambient_c is not None:
            device.thermal.ambient_c = row.ambient_c
        state = device.state()
        off = device.battery.empty and not device.charging
        point, decision = (None, None) if off else choose(state)
        dist = None if point is None else ExitDistribution.of(point, n)
        reach = [0.0] * n if dist is None else list(dist.reach)
        requests = row.requests_per_s * dt
        done = device.run_requests([requests * r for r in reach], dt)
        if policy is not None and done.served_fraction > 0:
            for k in (k for k in range(n) if reach[k] > 0):
                lat = done.sampled_latency_ms[k]  # one timed call teaches the cost model, ...
                policy.cost_model.observe(
                    k,
                    lat,
                    done.stage_energy_mj[k] * lat / done.stage_latency_ms[k],
                    speed=done.speed,
                )
            served = requests * done.served_fraction  # ... the pacer pays for the whole step
            policy.spend(served * dist.expected(done.stage_energy_mj), served)
        run.add(t0, dt, state, point, decision, requests, done, dist, device)
    return run


def _device(target: CostTable, scenario: Scenario, start: TracePoint, seed: int) -> SimulatedDevice:
    """A fresh simulated target device at the trace's first row."""
    percent = scenario.start_percent if start.battery_percent is None else start.battery_percent
    return SimulatedDevice.from_cost_table(
        target,
        power_w=scenario.power_w,
        idle_power_w=scenario.idle_power_w,
        battery=Battery(scenario.battery_wh, percent),
        thermal=ThermalModel(),
        charging=start.charging,
        charging_power_w=scenario.charging_power_w,
        noise=scenario.noise,
        seed=seed,
    )


def _notes(table: CostTable, scenario: Scenario, spec: PolicySpec) -> list[str]:
    notes = [
        f"stage latencies: the {table.backend} cost table (batch {table.batch}) measured on "
        f"{table.device}, × {scenario.slowdown:g}; the policy starts from them and follows the "
        "simulated stage times by EWMA",
        "latency percentiles come from exit stages and throttling; per-call jitter averages out "
        "over a step and is left out of them",
    ]
    pacing = spec.pacing
    if pacing is not None:
        share = pacing.budget_mj / (scenario.battery_wh * 3.6e6) * 100
        notes.append(
            f"pacing: at most {pacing.battery_percent:g}% of a {pacing.battery_wh:g} Wh battery "
            f"({pacing.budget_mj / 1000:.4g} J, {share:.3g}% of the simulated "
            f"{scenario.battery_wh:g} Wh) on inference per {pacing.window_s:g} s window from the "
            "trace start, off the charger; idle draw is not paced; the policy decides once per "
            "step, so a window can overshoot by part of a step"
        )
    return notes


def _policy(manifest: Any, target: CostTable, scenario: Scenario, spec: PolicySpec) -> Policy:
    """A Policy over the manifest's points, its cost model starting from the target's table."""
    n, flops = len(manifest.stages), [s.flops for s in manifest.stages]
    cost_model = CostModel(n, target, stage_flops=flops, power_w=scenario.power_w)
    return Policy(operating_points(manifest), cost_model, spec, n)


def _chooser(policy: Policy) -> Chooser:
    def decide(state: DeviceState) -> tuple[OperatingPoint, Decision]:
        d = policy.decide(state)
        return d.point, d

    return decide


def simulate(
    manifest: Any,
    table: CostTable,
    trace: Trace,
    scenario: Scenario | None = None,
    *,
    policy_spec: PolicySpec | None = None,
    seed: int = 0,
) -> SimulationResult:
    """Replay `trace` on fresh SIMULATED devices built from `table` and `scenario`: under a
    Policy over the manifest's operating points (`policy_spec`, default `default_policy_spec`),
    always full, always earliest, and, when the policy has [pacing], the same policy without
    it ("policy without pacing"). All figures are simulated."""
    if not manifest.operating_points:
        raise ConfigError(
            f"bundle {manifest.model_id!r} records no operating points, so a policy has nothing to "
            "choose from; export it with `ponder export` from a checkpoint with exits (it "
            "calibrates them), or pass operating_points to export_bundle"
        )
    scenario = scenario or Scenario()
    target = target_table(table, scenario.slowdown)
    trace = _scaled(trace, scenario.load_scale) if scenario.load_scale != 1 else trace
    full, earliest, notes = baselines(manifest)
    full_ms = target.cumulative_latency_ms()[-1] / target.batch
    budget = scenario.latency_headroom * full_ms
    spec = policy_spec or default_policy_spec(budget, full.accuracy)
    if policy_spec is None:
        notes.append(
            f"default policy: latency budget {budget:.3g} ms = latency_headroom "
            f"{scenario.latency_headroom:g} × the full model's {full_ms:.3g} ms on the target"
        )
    policies = {"policy": _policy(manifest, target, scenario, spec)}
    if spec.pacing is not None:
        unpaced = replace(spec, pacing=None)
        policies["policy without pacing"] = _policy(manifest, target, scenario, unpaced)
    strategies = [(name, _chooser(p), p) for name, p in policies.items()] + [
        ("always full", lambda _: (full, None), None),
        ("always earliest", lambda _: (earliest, None), None),
    ]
    first, step = trace.points[0], scenario.step_s
    runs = [
        _replay(
            StrategyRun(name, first.time_s),
            _device(target, scenario, first, seed),
            trace,
            step,
            choose,
            policy,
        )
        for name, choose, policy in strategies
    ]
    notes += _notes(table, scenario, spec)
    return SimulationResult(scenario, trace.describe(), trace.synthetic, spec, runs, notes)
