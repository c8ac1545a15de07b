"""Energy pacing in a SIMULATED replay, window by window: each strategy's inference energy
against the policy's [pacing] budget, the battery it drained and the accuracy it kept."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ponder.runtime._policy.spec import EnergyPacing
    from ponder.runtime._sim.result import StrategyRun

__all__ = ["pacing_windows", "window_spent_j"]


def _steps(run: StrategyRun, window_s: float) -> Iterator[tuple[int, float, float, float, Any]]:
    """(window, inference J off the charger, served, expected accuracy or NaN, battery % at
    the end) of each step; a step belongs to the window of its start, as the pacer counts it."""
    s, start_h = run.series, 0.0
    columns = ("time_h", "energy_mj", "served", "accuracy", "battery_percent", "charging")
    rows = zip(*(s[c] for c in columns), strict=True)
    for end_h, mj, served, accuracy, battery, charging in rows:
        window = math.floor(start_h * 3600 / window_s + 1e-9)
        spent = 0.0 if charging or not served else served * mj / 1000
        yield window, spent, served, accuracy, battery
        start_h = end_h


def window_spent_j(run: StrategyRun, window_s: float) -> list[float]:
    """The inference energy spent in the current window by the end of each step, J."""
    out, window, total = [], 0, 0.0
    for k, spent, *_ in _steps(run, window_s):
        total = spent + (total if k == window else 0.0)
        out.append(total)
        window = k
    return out


def _per_window(run: StrategyRun, window_s: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    battery = run.start_percent
    for k, spent, served, accuracy, end in _steps(run, window_s):
        while len(rows) <= k:
            rows.append({"spent_j": 0.0, "served": 0.0, "_acc": 0.0, "_start": battery})
        w = rows[k]
        w["spent_j"] += spent
        w["served"] += served
        w["_acc"] += served * accuracy if served else 0.0
        w["battery_drain_percent"] = (w["_start"] or 0.0) - end
        battery = end
    for w in rows:
        acc, start = w.pop("_acc"), w.pop("_start")
        known = w["served"] > 0 and start is not None and not math.isnan(acc)
        w["mean_expected_accuracy"] = acc / w["served"] if known else None
    return rows


def pacing_windows(runs: list[StrategyRun], pacing: EnergyPacing) -> dict[str, Any]:
    """Each strategy per window of `pacing.window_s` from the trace start: inference energy off
    the charger (what the policy paces) against the budget, net battery drain (idle draw and
    charging included) and mean expected accuracy; per strategy, how many windows went over
    budget and the most any window spent."""
    budget_j, window_s = pacing.budget_mj / 1000, pacing.window_s
    per_run = {run.name: _per_window(run, window_s) for run in runs}
    count = max(len(rows) for rows in per_run.values())
    end_h = max(run.series["time_h"][-1] for run in runs)
    windows = [
        {
            "start_h": k * window_s / 3600,
            "end_h": min((k + 1) * window_s / 3600, end_h),
            "strategies": {name: rows[k] for name, rows in per_run.items() if k < len(rows)},
        }
        for k in range(count)
    ]
    return {
        **pacing.to_dict(),
        "budget_j": budget_j,
        "counted": "inference energy off the charger, as the policy paces it; battery drain is "
        "net and includes idle draw and charging",
        "totals": {
            name: {
                "windows_over_budget": sum(w["spent_j"] > budget_j for w in rows),
                "peak_window_j": max(w["spent_j"] for w in rows),
            }
            for name, rows in per_run.items()
        },
        "windows": windows,
    }
