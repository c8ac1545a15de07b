"""Evaluating an early-exit model on a data split: per-exit metrics, cost–accuracy curve, EEFP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ponder._calibration.metrics import (
    accuracy_at_budgets,
    cost_accuracy_curve,
    curve_auc,
    eefp_scores,
    exit_outcome,
    expected_calibration_error,
)
from ponder._calibration.thresholds import RiskControlResult, risk_controlled_threshold
from ponder._core.rules import exit_rule, offline_scores
from ponder._early_exit.flops import ExitCosts
from ponder._early_exit.infer import exit_outputs
from ponder._early_exit.stack import get_stack

BUDGETS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class ExitData:
    """An exit rule applied at every exit of a model over one split (K exits, N samples).

    Exiting on stored `scores` gives exactly what `ponder.infer` gives online, because both call
    the same rule on the same exit outputs; tests check this.
    """

    rule: str
    logp: np.ndarray  # [K, N, C] exit outputs (ZTW ensembles where the model has them)
    labels: np.ndarray  # [N]
    scores: np.ndarray  # [K, N] rule score, higher = more confident
    correct: np.ndarray  # [K, N] the rule's prediction at exit k is right
    costs: ExitCosts

    @property
    def full_correct(self) -> np.ndarray:
        """[N] the original model (its own head, exit K-1) is right."""
        return self.logp[-1].argmax(-1) == self.labels

    @property
    def exit_costs(self) -> np.ndarray:
        return self.costs.exit_costs

    def outcome(self, thresholds: Any) -> dict[str, Any]:
        """Accuracy, FLOPs fraction and exit histogram of fixed thresholds on this split."""
        out = exit_outcome(self.scores, self.correct, self.exit_costs, thresholds)
        k = self.scores.shape[0]
        return {
            "accuracy": out.accuracy,
            "flops_fraction": out.mean_cost / self.costs.full,
            "accuracy_drop": float(self.full_correct.mean()) - out.accuracy,
            "exit_fractions": out.exit_fractions(k).tolist(),
        }


def exit_data(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, costs: ExitCosts, rule: str = "max_prob"
) -> ExitData:
    """Run every exit of `model` on (x, y) once and score it with `rule`."""
    stack = get_stack(model)
    outs = exit_outputs(model.eval(), x, y)
    scores, preds = offline_scores(exit_rule(rule, ensembled=stack.ensembled), outs.logp)
    return ExitData(rule, outs.logp, outs.labels, scores, preds == outs.labels, costs)


def evaluate(data: ExitData, budgets: tuple[float, ...] = BUDGETS) -> dict[str, Any]:
    """Per-exit accuracy, ECE and EEFP, and the cost–accuracy curve of the rule's threshold sweep.

    Per-exit figures use each exit's own output (argmax and max-probability), independent of
    the rule; EEFP (arXiv 2508.21495) is the AUROC of that confidence against "exiting here is
    optimal" (this exit is right, or it and every later exit are wrong).
    """
    confidence = np.exp(data.logp.max(axis=-1))  # [K, N]
    exit_correct = data.logp.argmax(axis=-1) == data.labels  # [K, N]
    curve = cost_accuracy_curve(data.scores, data.correct, data.exit_costs, data.costs.full)
    return {
        "rule": data.rule,
        "samples": int(data.labels.size),
        "full_accuracy": float(data.full_correct.mean()),
        "exit_flops_fraction": (data.exit_costs / data.costs.full).tolist(),
        "exit_accuracy": exit_correct.mean(axis=1).tolist(),
        "exit_ece": [
            expected_calibration_error(c, k) for c, k in zip(confidence, exit_correct, strict=True)
        ],
        "eefp": eefp_scores(confidence, exit_correct).tolist(),
        "accuracy_at_budget": {str(b): a for b, a in accuracy_at_budgets(curve, budgets).items()},
        "auc": curve_auc(curve),
        "curve": curve,
    }


def flops_saved_at_drop(
    curve_accuracy: np.ndarray, flops: np.ndarray, full: float, drop: float
) -> float:
    """Largest FLOPs saving (1 - fraction) among curve points within `drop` of accuracy `full`."""
    ok = curve_accuracy >= full - drop - 1e-12
    return float(1.0 - flops[ok].min()) if ok.any() else 0.0


def calibrate(
    data: ExitData, delta: float, epsilon: float, bound: str = "binomial"
) -> RiskControlResult:
    """Risk-controlled shared threshold: accuracy drop against the full model <= delta with
    probability >= 1 - epsilon over the draw of the calibration data (Learn-then-Test)."""
    return risk_controlled_threshold(
        data.scores, data.correct, data.full_correct, delta, epsilon, bound=bound
    )
