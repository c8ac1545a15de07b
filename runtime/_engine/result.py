"""What one engine call returns: per sample, the answer, the stage it left at, the experts it
used, its latency and estimated energy; per stage, how many rows ran and how long it took."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Result", "concat"]


def concat(values: list[np.ndarray | None]) -> np.ndarray | None:
    """Per-sample arrays of consecutive parts joined (None if any part has none)."""
    if len(values) == 1:
        return values[0]
    return None if any(v is None for v in values) else np.concatenate(values)


@dataclass
class Result:
    """Per-sample arrays have one row per input sample, in input order.

    prediction: class index [N] (classifiers; None otherwise). output: what the answer was read
    from, [N, C] log-probabilities (classifiers) or [N, D] (embedding models). exit_stage: the
    stage index each sample left at [N]. by_deadline: the sample was answered at an anytime
    deadline with its latest exit's prediction, not by the exit rule [N]. experts: mean experts
    per token and MoE layer that the sample ran [N] (None without MoE outputs). latency_ms:
    from the start of the call to the sample's answer [N]. energy_mj: estimated energy spent
    on the sample (its share of every stage call it was in) [N], None when nothing measures or
    predicts energy; `energy_basis` says how it was estimated.
    """

    prediction: np.ndarray | None
    output: np.ndarray
    exit_stage: np.ndarray
    by_deadline: np.ndarray
    latency_ms: np.ndarray
    energy_mj: np.ndarray | None
    energy_basis: str
    experts: np.ndarray | None
    stage_ms: list[float]  # wall time of every backend stage call, in call order
    stage_rows: list[int]  # rows in that call
    stage_index: list[int]  # which stage each call ran
    point: Any  # the OperatingPoint used
    backend: str
    decision: Any = None  # the policy's Decision, when a policy chose the point
    step_ms: list[float] = field(default_factory=list)  # per call: + exit rule and row selection
    total_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.exit_stage)

    def exit_counts(self, num_stages: int) -> list[int]:
        """How many samples left at each stage."""
        return np.bincount(self.exit_stage, minlength=num_stages).tolist()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with the per-sample arrays as lists."""
        return {
            "backend": self.backend,
            "point": self.point.to_dict(),
            "prediction": None if self.prediction is None else self.prediction.tolist(),
            "exit_stage": self.exit_stage.tolist(),
            "by_deadline": self.by_deadline.tolist(),
            "experts": None if self.experts is None else self.experts.tolist(),
            "latency_ms": self.latency_ms.tolist(),
            "energy_mj": None if self.energy_mj is None else self.energy_mj.tolist(),
            "energy_basis": self.energy_basis,
            "stage_calls": [
                {"stage": k, "rows": r, "ms": ms, "step_ms": step}
                for k, r, ms, step in zip(
                    self.stage_index, self.stage_rows, self.stage_ms, self.step_ms, strict=True
                )
            ],
            "total_ms": self.total_ms,
            "decision": None if self.decision is None else self.decision.to_dict(),
        }
