"""Early-exit evaluation metrics on stored per-exit scores: exits, cost-accuracy curves, ECE, EEFP.

Numpy only. Shapes: K = exits (exit K-1 is the model's own head), N = samples, T = thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ponder._core.checks import positive
from ponder._core.errors import ConfigError
from ponder._core.rules import per_exit_thresholds

__all__ = [
    "CostAccuracyCurve",
    "ExitOutcome",
    "accuracy_at_budgets",
    "auroc",
    "cost_accuracy_curve",
    "curve_auc",
    "eefp_scores",
    "exit_outcome",
    "expected_calibration_error",
    "simulate_exits",
]


# ----------------------------------------------------------------------------- validation


def _as_scores(scores: Any) -> np.ndarray:
    """[K, N] float copy; a NaN score becomes -inf (it exits only under a threshold of -inf)."""
    s = np.array(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 1:
        raise ConfigError(
            f"scores must be a 2-D array [K exits, N samples] with K, N >= 1, got shape "
            f"{s.shape}; stack one row of scores per exit."
        )
    s[np.isnan(s)] = -np.inf
    return s


def _as_correct(correct: Any, shape: tuple[int, ...], name: str = "correct") -> np.ndarray:
    c = np.asarray(correct)
    if c.shape != shape:
        raise ConfigError(
            f"{name} has shape {c.shape} but must match the scores, {shape}; pass one boolean "
            "per exit and sample (True where that exit's prediction is right)."
        )
    return c.astype(bool)


def _as_costs(costs: Any, k: int) -> np.ndarray:
    c = np.asarray(costs, dtype=np.float64)
    if c.shape != (k,) or not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ConfigError(
            f"costs must be {k} finite, non-negative numbers (cumulative FLOPs when leaving at "
            f"each exit), got {c.tolist()!r}."
        )
    return c


def _json_float(x: float) -> float | str | None:
    """JSON has no inf/NaN: write +-inf as the strings 'inf'/'-inf' and NaN as null."""
    x = float(x)
    if np.isnan(x):
        return None
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


# ----------------------------------------------------------------------------- exits


def simulate_exits(scores: Any, thresholds: Any) -> np.ndarray:
    """Exit index [N] per sample: the first k < K-1 with scores[k, i] >= thresholds[k], else K-1."""
    s = _as_scores(scores)  # [K, N]
    k, n = s.shape
    t = per_exit_thresholds(thresholds, k - 1)  # [K-1]
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    passed = s[:-1] >= t[:, None]  # [K-1, N]
    return np.where(passed.any(axis=0), passed.argmax(axis=0), k - 1).astype(np.int64)


@dataclass(frozen=True)
class ExitOutcome:
    """What one set of thresholds does on stored data."""

    accuracy: float
    mean_cost: float
    exit_idx: np.ndarray  # [N] int

    def exit_fractions(self, num_exits: int) -> np.ndarray:
        """Fraction [K] of samples that left at each exit."""
        return np.bincount(self.exit_idx, minlength=num_exits) / self.exit_idx.size


def exit_outcome(scores: Any, correct: Any, costs: Any, thresholds: Any) -> ExitOutcome:
    """Accuracy and mean cost (in the units of `costs`) of an exit policy on stored data."""
    s = _as_scores(scores)
    c = _as_correct(correct, s.shape)
    cost = _as_costs(costs, s.shape[0])
    idx = simulate_exits(s, thresholds)  # [N]
    hit = c[idx, np.arange(s.shape[1])]  # [N]
    return ExitOutcome(float(hit.mean()), float(cost[idx].mean()), idx)


def _shared_threshold_sums(scores: np.ndarray, values: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """sum_i values[exit_i(lam), i] for every shared threshold lam, in O(NK log NK + T log NK).

    With m_k = max(scores[0..k]) (a running max), sample i leaves at the first k with m_k >= lam,
    so its value telescopes to values[K-1] + sum over {k < K-1: m_k >= lam} of
    (values[k] - values[k+1]). Sorting all m_k once turns that into a suffix sum per lam.
    """
    k = scores.shape[0]
    base = values[-1].sum()
    if k == 1:
        return np.full(lams.shape, base, dtype=np.float64)
    m = np.maximum.accumulate(scores[:-1], axis=0).ravel()  # [(K-1)*N]
    d = (values[:-1] - values[1:]).ravel()  # [(K-1)*N]
    order = np.argsort(m, kind="stable")
    suffix = np.concatenate([np.cumsum(d[order][::-1])[::-1], [0.0]])  # [(K-1)*N + 1]
    return base + suffix[np.searchsorted(m[order], lams, side="left")]  # [T]


def _default_grid(scores: np.ndarray, n_points: int) -> np.ndarray:
    """Ascending shared thresholds: score quantiles, from 'all leave at exit 0' to 'none leave'."""
    if scores.shape[0] == 1:
        return np.array([np.inf])  # a single exit: every threshold gives the same point
    m = np.maximum.accumulate(scores[:-1], axis=0).ravel()  # the only values where exits change
    if np.unique(m).size <= n_points:
        grid = np.unique(m)
    else:
        grid = np.unique(np.quantile(m, np.linspace(0, 1, n_points), method="inverted_cdf"))
    top = grid[-1]
    top = np.nextafter(top, np.inf) if np.isfinite(top) else np.inf  # nobody exits early
    return np.append(grid, top)


# ----------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class CostAccuracyCurve:
    """Accuracy against mean cost as a fraction of the original model's FLOPs, one point per row.

    `thresholds` is [T] (one shared threshold per point) or [T, K-1] (one vector per point).
    """

    thresholds: np.ndarray
    flops_fraction: np.ndarray  # [T]
    accuracy: np.ndarray  # [T]

    def to_dict(self) -> dict[str, list]:
        """Plain lists for JSON; infinite thresholds are written as 'inf'/'-inf'."""
        th = np.vectorize(_json_float, otypes=[object])(self.thresholds).tolist()
        return {
            "thresholds": th,
            "flops_fraction": self.flops_fraction.tolist(),
            "accuracy": self.accuracy.tolist(),
        }


def cost_accuracy_curve(
    scores: Any,
    correct: Any,
    costs: Any,
    full_cost: float,
    thresholds: Any = None,
    n_points: int = 200,
) -> CostAccuracyCurve:
    """Sweep exit thresholds and record (FLOPs fraction, accuracy) for each.

    thresholds=None sweeps one shared threshold over ~n_points quantiles of the scores, from one
    where every sample leaves at exit 0 to one where every sample reaches exit K-1. A 1-D array is
    a list of shared thresholds; a [T, K-1] array gives one threshold vector per point.
    """
    s = _as_scores(scores)  # [K, N]
    k, n = s.shape
    c = _as_correct(correct, s.shape).astype(np.float64)  # [K, N]
    cost = _as_costs(costs, k)
    full = positive(full_cost, "full_cost")
    th = _default_grid(s, n_points) if thresholds is None else np.asarray(thresholds, np.float64)
    if th.ndim == 1:
        if np.any(np.isnan(th)):
            raise ConfigError("thresholds contain NaN; use +inf to switch exits off.")
        hits = _shared_threshold_sums(s, c, th)  # [T]
        spent = _shared_threshold_sums(s, np.repeat(cost[:, None], n, axis=1), th)  # [T]
        return CostAccuracyCurve(th, spent / n / full, hits / n)
    if th.ndim != 2 or th.shape[1] != k - 1:
        raise ConfigError(
            f"thresholds must be [T] shared values or [T, {k - 1}] per-exit vectors, got shape "
            f"{th.shape}."
        )
    out = [exit_outcome(s, c, cost, row) for row in th]
    return CostAccuracyCurve(
        th, np.array([o.mean_cost / full for o in out]), np.array([o.accuracy for o in out])
    )


def accuracy_at_budgets(
    curve: CostAccuracyCurve, budgets: Any = (0.25, 0.5, 0.75, 1.0)
) -> dict[float, float]:
    """Best accuracy among points with flops_fraction <= budget (NaN where no point fits).

    A relative slack of 1e-9 absorbs float rounding in mean cost / full cost.
    """
    out = {}
    for b in np.atleast_1d(np.asarray(budgets, dtype=np.float64)):
        ok = curve.flops_fraction <= b * (1 + 1e-9)
        out[float(b)] = float(curve.accuracy[ok].max()) if ok.any() else float("nan")
    return out


def curve_auc(curve: CostAccuracyCurve, lo: float = 0.0, hi: float = 1.0) -> float:
    """Mean best-achievable accuracy over FLOPs fractions in [lo, hi].

    Definition: A(f) = max accuracy over curve points with flops_fraction <= f (the Pareto upper
    envelope as a step function; A(f) = 0 below the cheapest point), and the result is
    (1 / (hi - lo)) * integral of A(f) df over [lo, hi], computed exactly. A(b) is what
    `accuracy_at_budgets` reports for budget b, and the result lies in [0, 1].
    """
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ConfigError(f"curve_auc needs finite lo < hi, got lo={lo!r}, hi={hi!r}.")
    order = np.argsort(curve.flops_fraction, kind="stable")
    f = curve.flops_fraction[order]  # [T] ascending
    best = np.maximum.accumulate(curve.accuracy[order])  # [T] envelope on [f_j, f_{j+1})
    edges = np.clip(np.append(f, hi), lo, hi)  # [T + 1]
    return float(np.sum(np.diff(edges) * best) / (hi - lo))


# ----------------------------------------------------------------------------- calibration, EEFP


def expected_calibration_error(confidence: Any, correct: Any, n_bins: int = 15) -> float:
    """Standard ECE: sum over equal-width bins b of (n_b / N) * |accuracy_b - mean confidence_b|.

    Bin b (0-based) holds confidences in (b/n_bins, (b+1)/n_bins]; a confidence of exactly 0 goes
    to the first bin. Confidences must lie in [0, 1].
    """
    conf = np.asarray(confidence, dtype=np.float64)
    hit = _as_correct(correct, conf.shape).astype(np.float64)
    if conf.ndim != 1 or conf.size == 0 or np.any(~((conf >= 0) & (conf <= 1))):
        raise ConfigError(
            "confidence must be a non-empty 1-D array of probabilities in [0, 1]; for other "
            "scores (entropy, patience counts) map them to a probability first."
        )
    if int(n_bins) != n_bins or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {n_bins!r}.")
    n_bins = int(n_bins)
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)  # [N]
    gap = np.bincount(b, weights=hit - conf, minlength=n_bins)  # per-bin sum of (acc - conf)
    return float(np.abs(gap).sum() / conf.size)


def auroc(score: Any, target: Any) -> float:
    """Area under the ROC curve by the Mann-Whitney rank formula, ties given average ranks.

    Equals P(score_pos > score_neg) + 0.5 * P(tie). NaN when target holds a single class.
    """
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(target)
    if s.ndim != 1 or y.shape != s.shape or np.any(np.isnan(s)):
        raise ConfigError(
            f"auroc needs 1-D score and target of equal length with no NaN scores, got shapes "
            f"{s.shape} and {y.shape}."
        )
    y = y.astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based average ranks
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def eefp_scores(confidence: Any, correct: Any) -> np.ndarray:
    """EEFP per head [K] (arXiv 2508.21495): AUROC of head j's confidence for 'exit now is optimal'.

    Target ybar[j, i] = 1 if head j is right, or if head j and every later head are wrong; else 0.
    The last head's target is always 1, so its EEFP (like any single-class head's) is NaN.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    if conf.ndim != 2:
        raise ConfigError(f"confidence must be [K exits, N samples], got shape {conf.shape}.")
    y = _as_correct(correct, conf.shape)  # [K, N]
    later_right = np.logical_or.accumulate(y[::-1], axis=0)[::-1]  # [K, N]: some head >= j right
    ybar = y | ~later_right  # [K, N]
    return np.array([auroc(conf[j], ybar[j]) for j in range(conf.shape[0])])
