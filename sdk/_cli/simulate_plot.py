"""The `ponder simulate` plot: battery, expected accuracy, energy and latency over a SIMULATED
trace, for the policy against always-full and always-earliest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ponder._core.plots import pyplot, save_figure

COLORS = {"policy": "tab:blue", "always full": "tab:red", "always earliest": "tab:green"}
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
    """Four panels over time, three lines each; a dotted line where a battery ran out."""
    fig, axes = pyplot().subplots(2, 2, figsize=(12, 7.5), sharex=True)
    for ax, (column, label, stepwise) in zip(axes.flat, PANELS, strict=True):
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
    for ax in axes[1]:
        ax.set_xlabel(xlabel)
    headline = result.headline().replace(" at an accuracy", "\nat an accuracy")
    title = (
        f"SIMULATED replay ({result.trace}): policy vs always-full vs always-earliest "
        f"(dotted: battery empty)\n{headline}"
    )
    return save_figure(fig, path, title)
