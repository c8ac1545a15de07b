"""The `ponder simulate` plot: battery, expected accuracy, energy and latency over a SIMULATED
trace, for the policy against always-full and always-earliest; with [pacing], the energy spent in
each window against its budget and the battery drained per window, paced and unpaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ponder._core.plots import pyplot, save_figure
from ponder.runtime._sim.windows import window_spent_j

COLORS = {
    "policy": "tab:blue",
    "policy without pacing": "tab:purple",
    "always full": "tab:red",
    "always earliest": "tab:green",
}
PANELS = (  # (series column, y label, drawn per step)
    ("battery_percent", "battery % (simulated)", False),
    ("accuracy", "expected accuracy\n(calibration split)", True),
    ("energy_mj", "energy per inference, mJ\n(simulated)", True),
    ("mean_latency_ms", "mean latency, ms\n(simulated)", True),
)


def _floats(values: list[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _shade_charging(ax, t: np.ndarray, charging: list[bool], first: bool) -> None:
    """Grey spans where the trace has the device on the charger."""
    start = None
    for i, on in enumerate([*charging, False]):
        if on and start is None:
            start = t[i - 1] if i else 0.0
        elif not on and start is not None:
            ax.axvspan(
                start, t[i - 1], color="grey", alpha=0.12, lw=0, label="charging" if first else None
            )
            start, first = None, False


def _battery_edges(spec: Any) -> list[float]:
    edges = {r.battery_above for r in spec.rules} | {r.battery_below for r in spec.rules}
    return sorted(e for e in edges if e is not None)


def plot_simulation(
    path: str | Path, result: Any, xlabel: str = "hours since the trace start"
) -> Path:
    """Four panels over time, a line per strategy; a dotted line where a battery ran out. With
    [pacing], two more: window energy against the budget, and battery drained per window."""
    paced = result.policy.pacing is not None
    fig, axes = pyplot().subplots(
        3 if paced else 2, 2, figsize=(12, 10.5 if paced else 7.5), sharex=True
    )
    for ax, (column, label, stepwise) in zip(axes.flat, PANELS, strict=False):
        for run in result.runs:
            s = run.series
            t, y = np.asarray(s["time_h"], dtype=float), _floats(s[column])
            ax.plot(
                t,
                y,
                color=COLORS.get(run.name),
                label=run.name,
                lw=2.6 if run.name == "always full" else 1.4,  # shows under the policy's
                zorder=3 if run.name == "policy" else 2,
                drawstyle="steps-pre" if stepwise else "default",
            )
            if run.lifetime_s is not None:
                ax.axvline(run.lifetime_s / 3600, color=COLORS.get(run.name), ls=":", lw=1.2)
        _shade_charging(ax, t, result.runs[0].series["charging"], ax is axes.flat[0])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for edge in _battery_edges(result.policy):
        axes[0, 0].axhline(edge, color="grey", ls="--", lw=0.8)
        axes[0, 0].annotate(
            f"policy rule edge {edge:g}%",
            (0, edge),
            fontsize=7,
            color="grey",
            xytext=(2, 2),
            textcoords="offset points",
        )
    axes[0, 0].set_ylim(-2, 102)
    axes[0, 0].legend(fontsize=8, loc="center right")
    if paced:
        _plot_pacing(axes[2], result)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    headline = result.headline().replace(" at an accuracy", "\nat an accuracy")
    what = "policy with and without pacing" if paced else "policy"
    head = f"SIMULATED replay ({result.trace}): {what} vs always-full vs always-earliest"
    dotted = "(dotted: battery empty)"
    title = f"{head}\n{dotted} {headline}" if paced else f"{head} {dotted}\n{headline}"
    return save_figure(fig, path, title)


def _plot_pacing(axes: Any, result: Any) -> None:
    """Inference energy spent so far in each window (a sawtooth) under the budget line, and net
    battery drain per window, for the policy with and without pacing."""
    pacing, windows = result.policy.pacing, result.pacing()["windows"]
    edges = [w["start_h"] for w in windows] + [windows[-1]["end_h"]]
    top = 0.0
    for name in ("policy without pacing", "policy"):  # the policy's lines on top
        run, color, z = result.run(name), COLORS[name], 3 if name == "policy" else 2
        t = np.asarray(run.series["time_h"], dtype=float)
        spent = window_spent_j(run, pacing.window_s)
        axes[0].plot(t, spent, color=color, lw=1.2, label=name, zorder=z)
        drain = [w["strategies"][name]["battery_drain_percent"] for w in windows]
        axes[1].stairs(drain, edges, baseline=None, color=color, lw=1.4, label=name, zorder=z)
        top = max(top, *drain)
    axes[0].axhline(pacing.budget_mj / 1000, color="black", ls="--", lw=1.0, label="budget")
    axes[0].set_ylabel("inference energy spent\nin the window, J (simulated)")
    share = pacing.budget_mj / (result.scenario.battery_wh * 3.6e6) * 100  # of the simulated one
    axes[1].axhline(share, color="black", ls="--", lw=1.0, label="pacing budget (inference only)")
    axes[1].set_ylim(-0.1 * max(top, share), 1.25 * max(top, share))  # charging: off the scale
    axes[1].set_ylabel("battery drained per window,\npoints (idle included; simulated)")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
