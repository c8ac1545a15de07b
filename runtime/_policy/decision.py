"""A policy's Decision, and why it chose what it chose in a few lines of words (built only when
asked for, so that deciding stays cheap)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

from ponder.runtime._policy.cost_model import CostModel, Prediction
from ponder.runtime._policy.pacing import PaceReading
from ponder.runtime._policy.points import OperatingPoint
from ponder.runtime._policy.snapshot import Limits, Snapshot
from ponder.runtime._policy.spec import PolicyRule, PolicySpec

if TYPE_CHECKING:
    from ponder.runtime._telemetry.state import DeviceState

__all__ = ["Decision", "Why"]


class Why(NamedTuple):
    """What a decision saw: enough to explain it later (the policy's points, rules, spec and
    cost model, and the snapshot of predictions it chose with)."""

    points: Sequence[OperatingPoint]
    rules: tuple[PolicyRule, ...]  # the default last
    spec: PolicySpec
    cost_model: CostModel
    snap: Snapshot
    state: DeviceState
    rule: int  # index into rules
    was_active: int
    previous: int | None  # the point before this decision
    best: int  # the best point before hysteresis
    chosen: int
    how: str  # "accuracy", "cost", "floor", "cheapest" or "unknown"
    kept: str | None  # "margin" or "dwell" when hysteresis kept the previous point
    limits: Limits  # worst latency at full clock (ms), energy (mJ, paced), floor
    pace: PaceReading | None = None  # the pacer when the policy has [pacing]


@dataclass(frozen=True, eq=False)
class Decision:
    """The point to run next, what it is predicted to cost, under which rule and budgets.

    feasible: the point meets every budget (False: none does, so the cheapest runs); changed:
    it differs from the previous decision. `reasons` are built on first access."""

    point: OperatingPoint
    prediction: Prediction
    rule_name: str
    constraints: dict[str, float | None]
    feasible: bool
    changed: bool
    why: Why | None = field(default=None, repr=False)  # what it saw, for `reasons`

    @cached_property
    def reasons(self) -> list[str]:
        return _reasons(self, self.why) if self.why is not None else []

    def explain(self) -> str:
        """A few human-readable lines: rule, budgets against predictions, the choice and why."""
        return "\n".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "point": self.point.name,
            "operating_point": self.point.to_dict(),
            "prediction": self.prediction.to_dict(),
            "rule": self.rule_name,
            "constraints": dict(self.constraints),
            "feasible": self.feasible,
            "changed": self.changed,
            "reasons": list(self.reasons),
        }


def _reasons(d: Decision, w: Why) -> list[str]:
    lines = [_rule_line(w), *_budget_lines(d, w), _choice_line(d, w)]
    lines += [line for line in (_left_line(w), _neighbour_line(d, w)) if line]
    cm = w.cost_model
    costs = f"costs: {cm.describe()}; {w.snap.version} stage measurements so far"
    return [*lines, costs + (f"; energy: {cm.energy_basis}" if w.snap.has_energy else "")]


def _state_words(s: DeviceState) -> str:
    words = [] if s.battery_percent is None else [f"battery {s.battery_percent:.3g}%"]
    words += [] if s.charging is None else ["charging" if s.charging else "not charging"]
    words += [] if s.temperature_c is None else [f"{s.temperature_c:.3g} °C"]
    return ", ".join(words) or "device state unknown"


def _fig(x: float | None, unit: str) -> str:
    return "unknown" if x is None or x != x else f"{x:.3g} {unit}"  # x != x: NaN


def _name(w: Why, i: int) -> str:
    return repr(w.points[i].name)


def _acc(w: Why, i: int) -> str:
    a = w.points[i].accuracy
    return "unknown" if a is None else f"{a:.3f}"


def _conditions(w: Why) -> str:
    r, s = w.rules[w.rule], w.state
    words = []
    if r.battery_above is not None:
        words.append(f"battery {s.battery_percent:.3g}% (above {r.battery_above:g})")
    if r.battery_below is not None:
        words.append(f"battery {s.battery_percent:.3g}% (below {r.battery_below:g})")
    if r.charging is not None:
        words.append("charging" if s.charging else "not charging")
    if r.temperature_above is not None:
        words.append(f"{s.temperature_c:.3g} °C (above {r.temperature_above:g})")
    return ", ".join(words)


def _rule_line(w: Why) -> str:
    rules, s = w.rules, w.state
    r = rules[w.rule]
    if w.rule == len(rules) - 1:
        if len(rules) == 1:
            return f"[{r.name}] budgets apply (the policy has no rules)"
        return f"no rule holds ({_state_words(s)}): [{r.name}] budgets apply"
    if r.holds(s.battery_percent, s.charging, s.temperature_c):
        return f"rule {r.name!r} holds: {_conditions(w)}"
    spec = w.spec
    return (
        f"rule {r.name!r} stays active inside its hysteresis band (battery_band "
        f"{spec.battery_band:g}, temperature_band {spec.temperature_band:g}): {_conditions(w)}"
    )


def _budget_lines(d: Decision, w: Why) -> list[str]:
    r, p, speed = w.rules[w.rule], d.prediction, w.state.speed
    out = []
    if r.latency_ms is not None:
        at = f" at clock speed {speed:g}" if speed != 1 else ""
        out.append(
            f"latency budget {r.latency_ms:.3g} ms ({_share(w)}); predicted {_fig(p.worst_latency_ms, 'ms')}{at}"
        )
    if r.needs_energy:
        parts = [f"{r.energy_mj:g} mJ"] if r.energy_mj is not None else []
        if r.energy_fraction is not None:
            parts.append(f"{r.energy_fraction:g} × the full model's {_fig(w.snap.full_en, 'mJ')}")
        out.append(
            f"energy budget {_fig(w.limits[1], 'mJ')} per inference ({' and '.join(parts)}); "
            f"predicted {_fig(p.mean_energy_mj, 'mJ')}"
        )
    if w.pace is not None:
        out.append(_pacing_line(d, w, w.pace))
    if r.min_accuracy is not None:
        out.append(f"accuracy floor {r.min_accuracy:g}; expected {_acc(w, w.chosen)}")
    return out or ["no budgets: the most accurate point runs"]


def _pacing_line(d: Decision, w: Why, p: PaceReading) -> str:
    """E.g. "pacing: 1.2 of 3% of the battery (648 of 1,620 J) spent this hour, 41 min left at
    2.1 requests/s: at most 3.4 mJ per inference; predicted 3.1 mJ"."""
    pacing, window = p.pacing, _window_words(p.pacing.window_s)
    spent = (
        f"{p.spent_percent:.2g} of {pacing.battery_percent:g}% of the battery "
        f"({_joules(p.spent_mj)} of {_joules(p.budget_mj)} J) spent {window}"
    )
    if p.charging:
        return f"pacing: on the charger, the battery pays nothing, so no cap ({spent})"
    rate = ", request rate not known yet" if p.rate is None else f" at {p.rate:.3g} requests/s"
    head = f"pacing: {spent}, {_duration(p.left_s)} left{rate}: "
    if p.allowance_mj == 0:
        return head + "the budget is spent, so the cheapest point runs until the next window"
    own = w.rules[w.rule].energy_limit(w.snap.full_en)
    tighter = f" (the rule's own {_energy(own)} is tighter)" if own < p.allowance_mj else ""
    predicted = _fig(d.prediction.mean_energy_mj, "mJ")
    return head + f"at most {_energy(p.allowance_mj)} per inference{tighter}; predicted {predicted}"


def _window_words(window_s: float) -> str:
    return {3600.0: "this hour", 86400.0: "today"}.get(
        float(window_s), f"in this {_duration(window_s)} window"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.3g} h"


def _energy(mj: float) -> str:
    return f"{mj:.3g} mJ" if mj < 1000 else f"{mj / 1000:.3g} J"


def _joules(mj: float) -> str:
    j = mj / 1000
    return f"{j:.3g}" if j < 1000 else f"{j:,.0f}"


def _choice_line(d: Decision, w: Why) -> str:
    spec, name, n = w.spec, repr(d.point.name), len(w.points)
    cur = w.previous
    if w.kept == "margin" and w.how == "cost":
        save = 1 - w.snap.cost[w.best] / w.snap.cost[cur]
        return f"kept {name} (hysteresis): {_name(w, w.best)} would save only {save:.1%}, within cost_margin {spec.cost_margin:g}"
    if w.kept == "margin":
        gain = w.snap.accuracy[w.best] - w.snap.accuracy[cur]
        return f"kept {name} (hysteresis): {_name(w, w.best)} would gain only {gain:+.4f} accuracy, within accuracy_margin {spec.accuracy_margin:g}"
    if w.kept == "dwell":
        return f"kept {name} (hysteresis): {_name(w, w.best)} is better, but min_requests={spec.min_requests} have not passed since the last switch"
    cost = "energy" if w.snap.has_energy else "latency"
    return {
        "accuracy": f"chose {name}: the most accurate of the {len(w.snap.feasible(w.limits))} of {n} points within the budgets (expected accuracy {_acc(w, w.best)})",
        "cost": f"chose {name}: the least mean {cost} of the {len(w.snap.feasible(w.limits))} of {n} points meeting the floor and budgets",
        "floor": f"no point within the budgets reaches the accuracy floor: chose the most accurate within them, {name} ({_acc(w, w.best)}); feasible=False",
        "cheapest": f"no point meets the budgets: running the cheapest, {name}; feasible=False",
        "unknown": f"stage costs are not known yet: running the cheapest by FLOPs, {name}, until observe() measures a stage time (or give a cost table from `ponder profile BUNDLE`); feasible=False",
    }[w.how]


def _breaks(w: Why, i: int) -> str | None:
    """Which limit point i breaks, with the figures, or None."""
    (lat, en, floor), s, speed = w.limits, w.snap, w.state.speed
    if s.worst_lat[i] > lat:
        return (
            f"predicted {_share(w)} latency {s.worst_lat[i] / speed:.3g} ms > {lat / speed:.3g} ms"
        )
    if s.mean_en[i] > en:
        return f"predicted energy {s.mean_en[i]:.3g} mJ > {en:.3g} mJ"
    if w.snap.accuracy[i] < floor:
        return f"expected accuracy {_acc(w, i)} < floor {floor:g}"
    return None


def _left_line(w: Why) -> str | None:
    prev = w.previous
    if prev is None or prev == w.chosen or w.how == "unknown":
        return None
    broken = _breaks(w, prev)
    if broken:
        return f"left {_name(w, prev)}: it breaks a budget now ({broken})"
    if w.how == "cost":
        save = 1 - w.snap.cost[w.chosen] / w.snap.cost[prev]
        return f"left {_name(w, prev)}: the new point saves {save:.1%}, more than cost_margin {w.spec.cost_margin:g}"
    gain = w.snap.accuracy[w.chosen] - w.snap.accuracy[prev]
    return f"left {_name(w, prev)}: the new point gains {gain:+.4f} accuracy, more than accuracy_margin {w.spec.accuracy_margin:g}"


def _neighbour_line(d: Decision, w: Why) -> str | None:
    """Why not the nearest more accurate point (or, under a floor, the nearest cheaper one)."""
    if w.kept or w.how == "unknown":
        return None
    acc, i = w.snap.accuracy, w.chosen
    if w.how == "cost":
        order = w.snap.by_cost
        cheaper = order[: order.index(i)]
        j = cheaper[-1] if cheaper else None
        label = "cheaper"
    else:
        above = [k for k in range(len(w.points)) if acc[k] > acc[i]]
        j = min(above, key=lambda k: (acc[k], w.snap.mean_lat[k])) if above else None
        label = "more accurate"
    if j is None:
        return f"no {label} point exists in the table"
    why = _breaks(w, j) or "it is not better once ties and costs are weighed"
    return f"{label} {_name(w, j)} ({_acc(w, j)}) is out: {why}"


def _share(w: Why) -> str:
    """The latency the budget bounds: "p99" for latency_quantile 0.99, "worst-case" for 1."""
    q = w.spec.latency_quantile
    return "worst-case" if q == 1 else f"p{100 * q:.3g}"
