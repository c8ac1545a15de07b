"""The operating points of a bundle: the table its manifest holds, read back as `OperatingPoint`s
(the one type the sdk's calibration wrote them with), and the `ExitDistribution` of a point:
where its requests leave, and what that makes a request cost on average."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from ponder._core.errors import ConfigError
from ponder._core.points import OperatingPoint

__all__ = ["ExitDistribution", "OperatingPoint", "operating_points"]


def operating_points(manifest: Any) -> list[OperatingPoint]:
    """The operating points of a `Manifest` (rows without thresholds are skipped: they cannot
    be run), in the manifest's order. `ponder.operating_points(data)` is where they come from:
    it measures them on calibration data, and export writes them into the manifest."""
    num_exits = manifest.num_exits
    points = []
    for row in manifest.operating_points:
        if row.get("thresholds") is None:
            continue
        point = OperatingPoint.from_dict(row)
        if len(point.thresholds) != num_exits:
            raise ConfigError(
                f"operating point {point.name!r} has {len(point.thresholds)} thresholds for "
                f"{num_exits} early exits; re-export the bundle"
            )
        points.append(point)
    return points


@dataclass(frozen=True)
class ExitDistribution:
    """Where the requests of an operating point leave: `shares[k]` of them at stage k (one
    share per stage, summing to 1); every request still running leaves at `last_stage`.

    reach[k], the share that runs stage k, is the sum of the shares at k and after, so the
    expected cost of a request is sum_k reach[k] * stage_cost[k] (the same as sum_k shares[k]
    times the cost of stages 0..k). Policy, cost model and simulation all compute it here.
    """

    shares: tuple[float, ...]
    last_stage: int

    @classmethod
    def of(cls, point: OperatingPoint, num_stages: int) -> ExitDistribution:
        """The point's exit_fractions (mass past its last stage moved onto the last stage), or
        everyone at the last stage when it has none."""
        last = point.last_stage(num_stages)
        if not point.exit_fractions:
            return cls(tuple(1.0 if k == last else 0.0 for k in range(num_stages)), last)
        fr = point.exit_fractions
        if len(fr) != num_stages or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 0.01:
            raise ConfigError(
                f"operating point {point.name!r}: exit_fractions {list(fr)} must be {num_stages} "
                "non-negative shares summing to 1 (one per stage); re-export the bundle"
            )
        out = list(fr[: last + 1]) + [0.0] * (num_stages - last - 1)
        out[last] += sum(fr[last + 1 :])
        return cls(tuple(out), last)

    @property
    def reach(self) -> tuple[float, ...]:
        """Share of requests that run stage k: those leaving at k or later."""
        return tuple(accumulate(reversed(self.shares)))[::-1]

    def expected(self, stage_costs: Sequence[float]) -> float:
        """Expected cost of one request: sum_k reach[k] * stage_costs[k]."""
        return sum(r * c for r, c in zip(self.reach, stage_costs, strict=True))

    def quantile_stage(self, quantile: float = 1.0) -> int:
        """The stage by which `quantile` of the requests have left (1.0: the last stage with a
        share): a latency budget for that share of requests must cover the time to reach it."""
        total = 0.0
        for k, f in enumerate(self.shares):
            total += f
            if total >= quantile - 1e-9:
                return k
        return self.last_stage

    def cost_to_quantile(self, stage_costs: Sequence[float], quantile: float = 1.0) -> float:
        """Cost of the stages up to `quantile_stage(quantile)`: what the slowest of that share
        of requests pays."""
        return sum(stage_costs[: self.quantile_stage(quantile) + 1])
