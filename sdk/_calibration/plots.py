"""Calibration plots: cost–accuracy curves with marked operating points, and per-exit bars."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ponder._calibration.metrics import CostAccuracyCurve
from ponder._core.plots import pyplot, save_figure


def plot_exits(
    path: str | Path,
    curves: Mapping[str, CostAccuracyCurve],
    per_exit: Mapping[str, Mapping[str, Sequence[float]]],
    points: Mapping[str, tuple[float, float]] | None = None,
    full_accuracy: float | None = None,
    title: str = "",
) -> Path:
    """Left: accuracy against FLOPs fraction per curve; right: per-exit accuracy and EEFP."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4.2))
    for label, curve in curves.items():
        order = np.argsort(curve.flops_fraction)
        left.plot(curve.flops_fraction[order], curve.accuracy[order], label=label, lw=1.6)
    for label, (x, y) in (points or {}).items():
        left.scatter([x], [y], marker="*", s=120, zorder=5, label=label)
    if full_accuracy is not None:
        left.axhline(full_accuracy, color="grey", ls="--", lw=1, label="full model")
    left.set(xlabel="FLOPs / full model", ylabel="accuracy", title="cost–accuracy")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    width, lowest = 0.8 / max(1, 2 * len(per_exit)), 1.0
    for i, (label, stats) in enumerate(per_exit.items()):
        k = np.arange(len(stats["accuracy"]))
        right.bar(k + (2 * i) * width, stats["accuracy"], width, label=f"{label} accuracy")
        eefp = np.nan_to_num(np.asarray(stats["eefp"], dtype=float))
        right.bar(k + (2 * i + 1) * width, eefp, width, label=f"{label} EEFP", alpha=0.7)
        lowest = min(lowest, *stats["accuracy"], *eefp[eefp > 0])
    # zoomed: the interesting differences are a few points near the top
    right.set(
        xlabel="exit (the last is the model's own head)",
        ylabel="score",
        title="per exit",
        ylim=(max(0.0, lowest - 0.05), 1.0),
    )
    right.grid(alpha=0.3, axis="y")
    right.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path, title)
