"""What a policy predicts for each of its points at one cost-model version: mean and worst
latency, mean energy, and which points meet a set of limits. Never mutated, so a Decision can
keep it for its explanation."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ponder.runtime._policy.cost_model import CostModel

__all__ = ["Limits", "Snapshot"]

# worst latency at full clock (ms), mean energy (mJ), accuracy floor
Limits = tuple[float, float, float]


class Snapshot:
    """Per-point predictions at full clock (latency in FLOPs while costs are unknown).

    reach_and_worst: [2P, 2S] blockdiag(reach, worst) and lat_and_energy: [3P, 3S]
    blockdiag(reach, worst, reach), where reach[p] is point p's ExitDistribution.reach and
    worst[p, k] = 1 for the stages up to its latency quantile stage; accuracy: per point
    (-inf where unknown)."""

    def __init__(
        self,
        cm: CostModel,
        reach_and_worst: np.ndarray,
        lat_and_energy: np.ndarray,
        accuracy: list[float],
    ):
        self.version, self.known, self.accuracy = cm.version, cm.known, accuracy
        n = len(accuracy)
        lat, en = cm.stage_costs() if self.known else (list(cm.stage_flops), None)
        extra, step = (cm.request_ms, cm.stepped) if self.known else (0.0, list)
        # the engine's own time per step counts for latency, not for energy
        times = step(lat) + step(cm.stage_tail_ms(lat) if self.known else lat)
        # numpy because it is faster here: [2P, S] @ [S] and .tolist() take 2.3 µs for 40 points,
        # the same sums in pure Python 12 µs (2-core AMD EPYC, Python 3.11, numpy 2.4)
        if en is None:  # [2P] = blockdiag(reach, worst) @ [2S]
            out = (reach_and_worst @ np.array(times)).tolist()
        else:  # [3P] = blockdiag(reach, worst, reach) @ [3S]: one matmul, 1 µs less than two
            out = (lat_and_energy @ np.array(times + en)).tolist()
        self.mean_lat = [v + extra for v in out[:n]]
        self.worst_lat = [v + extra for v in out[n : 2 * n]]
        self.has_energy = en is not None
        self.mean_en = out[2 * n :] if en is not None else [0.0] * n
        self.full_en = sum(en) if en is not None else None
        self.cost = self.mean_en if self.has_energy else self.mean_lat

    def meets(self, i: int, limits: Limits) -> bool:
        """Whether point i is within the latency and energy limits and above the floor."""
        lat_lim, en_lim, floor = limits
        return (
            self.worst_lat[i] <= lat_lim and self.mean_en[i] <= en_lim and self.accuracy[i] >= floor
        )

    def feasible(self, limits: Limits) -> list[int]:
        """Indices of the points that meet `limits`."""
        return [i for i in range(len(self.accuracy)) if self.meets(i, limits)]

    @cached_property
    def by_cost(self) -> list[int]:
        """Indices cheapest first (mean energy, else mean latency), then worst latency, accuracy."""
        keys = (-np.asarray(self.accuracy), np.asarray(self.worst_lat), np.asarray(self.cost))
        return np.lexsort(keys).tolist()

    @cached_property
    def cheapest(self) -> int:
        return min(range(len(self.cost)), key=lambda i: (self.worst_lat[i], self.cost[i]))
