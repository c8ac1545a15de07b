"""Per-stage time and energy the engine expects: from the device's cost table, corrected by
the stage calls it has timed (for anytime deadlines and energy estimates)."""

from __future__ import annotations

import math

from ponder.runtime._bundle.costs import CostTable

__all__ = ["StageClock"]

ALPHA = 0.3  # EWMA weight of a new measurement


class StageClock:
    """Expected milliseconds of one call of stage k on `rows` rows. Measurements are kept per
    batch bucket (powers of two), since a call's time is far from proportional to its rows at
    small batches; an unmeasured bucket is scaled from the nearest measured one, rows to rows
    (pessimistic going up), and before any measurement the cost table's batch-1 figure is."""

    def __init__(self, num_stages: int, table: CostTable | None = None):
        self.table = table
        self._ms: list[dict[int, float]] = [{} for _ in range(num_stages)]
        self._power_w = [None] * num_stages  # watts while stage k runs, from the table
        if table is not None:
            for s in table.stages:
                self._ms[s.index][_bucket(table.batch)] = s.latency_ms
                if s.energy_mj is not None and s.latency_ms > 0:
                    self._power_w[s.index] = s.energy_mj / s.latency_ms

    def observe(self, k: int, ms: float, rows: int) -> None:
        b, known = _bucket(rows), self._ms[k]
        per = ms * b / rows  # as if the bucket were full
        known[b] = per if b not in known else (1 - ALPHA) * known[b] + ALPHA * per

    def predict_ms(self, k: int, rows: int) -> float:
        """0.0 when stage k was never timed and the table has no figure (nothing is known)."""
        known = self._ms[k]
        if not known:
            return 0.0
        b = _bucket(rows)
        if b in known:
            return known[b] * rows / b
        near = min(known, key=lambda x: abs(math.log2(x) - math.log2(b)))
        return known[near] * rows / near

    def energy_mj(self, k: int, ms: float) -> float | None:
        power = self._power_w[k]
        return None if power is None else power * ms

    @property
    def energy_basis(self) -> str:
        if self.table is None or all(p is None for p in self._power_w):
            return "not estimated: no energy probe and no cost table with energy (ponder profile)"
        label = "simulated " if self.table.simulated else ""
        return (
            f"{label}stage power from the cost table ({self.table.energy_source}) x the "
            "measured stage time"
        )


def _bucket(rows: int) -> int:
    """The power of two at or above `rows`."""
    return 1 << (max(rows, 1) - 1).bit_length()
