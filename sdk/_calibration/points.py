"""Operating points measured on calibration data: the Pareto-optimal shared thresholds of an exit
rule (and, for export, the same with every sample made to leave by stage s), as the one table
`ponder.operating_points` returns and `ponder export` writes into the manifest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ponder._calibration.metrics import cost_accuracy_curve
from ponder._core.points import OperatingPoint

if TYPE_CHECKING:
    from ponder._calibration.evaluate import ExitData

__all__ = ["measure_point", "operating_points"]


def operating_points(
    data: ExitData,
    rows: int = 8,
    *,
    by_stage: bool = False,
    moe_tau: float | None = None,
    flops_scale: float = 1.0,
) -> list[OperatingPoint]:
    """A small table of Pareto-optimal shared thresholds on `data`, spread over FLOPs fractions:
    what each costs and how accurate it is (the table a policy chooses from).

    by_stage: also the same thresholds with every sample still running made to leave at stage
    s (for a latency budget that cannot wait for the later stages), where that changes anything.
    moe_tau: the dynamic-k tau `data` was measured at (recorded, and named in each row);
    flops_scale: multiplies every FLOPs fraction (export: this tau's FLOPs against the model
    with every expert running). Rows that behave like an earlier one are dropped.

    `ponder.runtime.operating_points(manifest)` reads back the table export wrote with this.
    """
    early = data.scores.shape[0] - 1
    label = "" if moe_tau is None else f", tau {moe_tau:g}"
    table = []
    for t in _pareto_thresholds(data, rows):
        shared = (t,) * early
        name = f"shared threshold {t:.4g}{label}"
        table.append(measure_point(data, name, shared, moe_tau=moe_tau, flops_scale=flops_scale))
        if by_stage:
            table += _by_stage(data, name, shared, moe_tau, flops_scale)
    return _distinct(table)


def measure_point(
    data: ExitData,
    name: str,
    thresholds: tuple[float, ...],
    max_stage: int | None = None,
    *,
    moe_tau: float | None = None,
    flops_scale: float = 1.0,
    **extra: Any,
) -> OperatingPoint:
    """`thresholds` (every sample still running leaving at `max_stage`) measured on `data`:
    accuracy, FLOPs fraction (times `flops_scale`), accuracy drop and exit shares."""
    out = data.outcome(np.array(_cut(thresholds, max_stage)))
    return OperatingPoint(
        name=name,
        thresholds=tuple(thresholds),
        max_stage=max_stage,
        moe_tau=moe_tau,
        accuracy=out["accuracy"],
        flops_fraction=out["flops_fraction"] * flops_scale,
        accuracy_drop=out["accuracy_drop"],
        exit_fractions=tuple(out["exit_fractions"]),
        extra=extra,
    )


def _pareto_thresholds(data: ExitData, rows: int) -> list[float]:
    """Up to `rows` shared thresholds from the cost-accuracy front, spread over FLOPs fractions."""
    curve = cost_accuracy_curve(data.scores, data.correct, data.exit_costs, data.costs.full)
    order = np.argsort(curve.flops_fraction, kind="stable")
    best, front = -1.0, []
    for i in order:  # keep points that beat every cheaper point
        if curve.accuracy[i] > best:
            best = curve.accuracy[i]
            front.append(i)
    targets = np.linspace(curve.flops_fraction[front[0]], curve.flops_fraction[front[-1]], rows)
    picked = sorted(
        {front[int(np.argmin(np.abs(curve.flops_fraction[front] - t)))] for t in targets}
    )
    return [float(curve.thresholds[i]) for i in picked]


def _cut(thresholds: tuple[float, ...], max_stage: int | None) -> list[float]:
    """Thresholds under which every sample reaching `max_stage` leaves there."""
    if max_stage is None or max_stage >= len(thresholds):
        return list(thresholds)
    return [*thresholds[:max_stage], -float("inf"), *thresholds[max_stage + 1 :]]


def _by_stage(
    data: ExitData,
    name: str,
    thresholds: tuple[float, ...],
    moe_tau: float | None,
    flops_scale: float,
) -> list[OperatingPoint]:
    rows, full = [], data.outcome(np.array(thresholds))
    for s in range(len(thresholds)):
        if data.outcome(np.array(_cut(thresholds, s))) == full:
            continue
        label = f"{name}, all leave by stage {s}"
        rows.append(
            measure_point(data, label, thresholds, s, moe_tau=moe_tau, flops_scale=flops_scale)
        )
    return rows


def _distinct(points: list[OperatingPoint]) -> list[OperatingPoint]:
    """Drop rows that behave like an earlier one (truncating every threshold at stage 0 gives
    the same point each time)."""
    seen, out = set(), []
    for p in points:
        key = (p.moe_tau, p.max_stage, p.exit_fractions, p.accuracy)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
