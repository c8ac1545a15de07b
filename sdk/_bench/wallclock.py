"""Wall-clock check of adaptive inference: time fraction against FLOPs fraction, side by side."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ponder._bench.timing import interleaved
from ponder._early_exit.flops import ExitCosts
from ponder._early_exit.infer import infer


def time_operating_point(
    model: nn.Module,
    x: torch.Tensor,
    costs: ExitCosts,
    threshold: float,
    batch_size: int,
    repeats: int,
    rule: str = "max_prob",
) -> dict[str, Any]:
    """Median time of the adaptive run against the unconverted forward on the same inputs.

    Both variants process all of `x` in chunks of `batch_size`; they are interleaved in one
    process (see `interleaved`). The FLOPs fraction is counted from the exits really taken.
    """
    chunks = x.split(batch_size)

    @torch.inference_mode()
    def full() -> None:
        for chunk in chunks:
            model(chunk)  # no exit run active: the exit hooks do nothing

    def adaptive() -> None:
        for chunk in chunks:
            infer(model, chunk, rule=rule, thresholds=threshold)

    exits = np.concatenate(
        [infer(model, c, rule=rule, thresholds=threshold).exit_index.numpy() for c in chunks]
    )
    times = interleaved({"full": full, "adaptive": adaptive}, repeats=repeats, warmup=2)
    t_full, t_adaptive = float(np.median(times["full"])), float(np.median(times["adaptive"]))
    return {
        "batch_size": batch_size,
        "threshold": threshold,
        "samples": len(x),
        "flops_fraction": float(costs.exit_costs[exits].mean() / costs.full),
        "time_fraction": t_adaptive / t_full,
        "median_ms_full": 1e3 * t_full,
        "median_ms_adaptive": 1e3 * t_adaptive,
        "exit_counts": np.bincount(exits, minlength=len(costs.backbone)).tolist(),
    }


def exit_overhead(
    model: nn.Module, x: torch.Tensor, costs: ExitCosts, batch_size: int, repeats: int
) -> dict[str, Any]:
    """What computing the exits costs when nobody leaves: the adaptive run with a threshold no
    score reaches, against the unconverted forward, per early exit and per forward call."""
    early_exits = len(costs.heads)
    row = time_operating_point(model, x, costs, float("inf"), batch_size, repeats)
    calls = -(-len(x) // batch_size)
    return {
        "batch_size": batch_size,
        "us_full_forward": 1e3 * row["median_ms_full"] / calls,
        "us_per_exit": 1e3
        * (row["median_ms_adaptive"] - row["median_ms_full"])
        / calls
        / early_exits,
        "time_fraction_no_exit_taken": row["time_fraction"],
    }
