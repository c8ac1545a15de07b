"""Exit thresholds from held-out data: MSDNet budget matching and Learn-then-Test risk control.

Numpy only (scipy optional, for the exact binomial tail). Shapes: K exits, N samples.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ponder._calibration.metrics import (
    _as_correct,
    _as_costs,
    _as_scores,
    _json_float,
    _shared_threshold_sums,
    exit_outcome,
)
from ponder._core.checks import positive
from ponder._core.errors import ConfigError

__all__ = [
    "RiskControlResult",
    "empirical_risk_threshold",
    "risk_controlled_threshold",
    "thresholds_for_budget",
]

BOUNDS = ("binomial", "hoeffding")


# ----------------------------------------------------------------------------- budget matching


def _geometric_shares(costs: np.ndarray, target: float) -> np.ndarray:
    """Exit shares q_k ∝ r^k (k = 0..K-1) whose expected cost sum_k q_k costs[k] is `target`.

    r = 1 - p of the geometric p(1-p)^k; r > 1 (as in MSDNet's code, which sweeps p^k for p up
    to 2) puts more mass on late exits, so every target in [costs[0], costs[-1]] is reachable.
    Bisection on t = log r; the expected cost is non-decreasing in t for non-decreasing costs.
    """
    k = np.arange(costs.size)

    def shares(t: float) -> np.ndarray:
        z = t * k
        w = np.exp(z - z.max())
        return w / w.sum()

    lo, hi = -200.0, 200.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if shares(mid) @ costs < target else (lo, mid)
    return shares(0.5 * (lo + hi))


def _quantile_thresholds(scores: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Thresholds [K-1] letting ~shares[k]*N samples leave at exit k, taken in order of exits."""
    k, n = scores.shape
    goal = np.round(np.cumsum(shares) * n).astype(np.int64)  # cumulative exits wanted by exit k
    th = np.full(k - 1, np.inf)
    present = np.ones(n, dtype=bool)
    left = 0
    for j in range(k - 1):
        s = scores[j, present]  # scores of the samples still present
        want = goal[j] - left
        if want <= 0 or s.size == 0:
            continue  # +inf: nobody leaves here
        th[j] = s.min() if want >= s.size else np.partition(s, s.size - want)[s.size - want]
        leave = present & (scores[j] >= th[j])  # ties at the threshold all leave
        left += int(leave.sum())
        present &= ~leave
    return th


def thresholds_for_budget(scores: Any, costs: Any, full_cost: float, budget: float) -> np.ndarray:
    """Per-exit thresholds [K-1] whose mean cost on these scores is about budget * full_cost.

    MSDNet's recipe: assume exit shares q_k ∝ r^k, solve for r so that sum_k q_k costs[k] =
    budget * full_cost, then at each exit in turn take the score quantile that lets ~q_k * N of
    the samples still present leave. The cost is matched on *this* data (up to rounding and score
    ties, and a UserWarning says when it is off by more than 2% of full_cost); on new data it is
    an estimate, not a guarantee. A budget at or above costs[-1] / full_cost needs no early exit
    and returns all +inf.
    """
    s = _as_scores(scores)  # [K, N]
    k = s.shape[0]
    cost = _as_costs(costs, k)
    full = positive(full_cost, "full_cost")
    target = positive(budget, "budget") * full
    if np.any(np.diff(cost) < 0):
        raise ConfigError(
            f"costs must be non-decreasing (cumulative FLOPs per exit), got {cost.tolist()!r}."
        )
    if target < cost[0] * (1 - 1e-9):
        raise ConfigError(
            f"budget {budget} is below the cost of the first exit: every sample pays at least "
            f"costs[0] / full_cost = {cost[0] / full:.4f}. Pass a budget in "
            f"[{cost[0] / full:.4f}, {cost[-1] / full:.4f}]."
        )
    if k == 1 or target >= cost[-1]:
        return np.full(k - 1, np.inf)
    th = _quantile_thresholds(s, _geometric_shares(cost, target))
    realised = exit_outcome(s, np.ones(s.shape, bool), cost, th).mean_cost
    if abs(realised - target) > 0.02 * full:
        warnings.warn(
            f"thresholds_for_budget: the thresholds spend {realised / full:.4f} of full_cost on "
            f"this data instead of the requested {budget:.4f}, because many scores are tied "
            "(e.g. patience counts); finer-grained scores match the budget more closely.",
            UserWarning,
            stacklevel=2,
        )
    return th


# ----------------------------------------------------------------------------- risk control


@dataclass(frozen=True)
class RiskControlResult:
    """One shared exit threshold and the evidence for it.

    `threshold` = +inf means: never exit early (the full model). `empirical_risk` is the
    calibration-set loss at `threshold`; `tested` counts the hypotheses the procedure examined.
    """

    threshold: float
    delta: float
    epsilon: float | None
    bound: str
    n: int
    empirical_risk: float
    p_value: float | None
    early_exit_fraction: float
    tested: int
    feasible: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON; an infinite threshold is written as the string 'inf'."""
        d = asdict(self)
        for key in ("threshold", "empirical_risk", "p_value"):
            if d[key] is not None:
                d[key] = _json_float(d[key])
        return d


def _binom_cdf(k: np.ndarray, n: int, p: float) -> np.ndarray:
    """P(Binom(n, p) <= k) for integer array k (scipy if present, else log-sum-exp)."""
    try:
        from scipy.stats import binom
    except ImportError:
        j = np.arange(n + 1)
        logpmf = (
            np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in j])
            + j * math.log(p)
            + (n - j) * math.log1p(-p)
        )
        peak = logpmf.max()
        cdf = np.cumsum(np.exp(logpmf - peak)) * math.exp(peak)
        return np.minimum(cdf[np.clip(k, 0, n)], 1.0)
    return binom.cdf(k, n, p)


def _p_values(losses: np.ndarray, n: int, delta: float, bound: str) -> np.ndarray:
    """Valid p-values for H: E[loss] > delta, from loss counts (out of n) per threshold."""
    if bound == "binomial":
        return _binom_cdf(losses, n, delta)
    return np.exp(-2.0 * n * np.maximum(delta - losses / n, 0.0) ** 2)


def _risk_path(scores: Any, correct: Any, full_correct: Any, delta: float, grid: Any):
    """Descending grid [T], loss counts [T] and early-exit counts [T] at each grid threshold."""
    s = _as_scores(scores)  # [K, N]
    c = _as_correct(correct, s.shape)
    full = _as_correct(full_correct, (s.shape[1],), "full_correct")
    if not 0.0 < float(delta) < 1.0:
        raise ConfigError(f"delta must lie in (0, 1), got {delta!r}; e.g. 0.02 for a 2-point drop.")
    if grid is None:
        # Every distinct running-max score: the risk only changes there, so testing these is
        # the same as testing every real threshold in descending order. A grid picked from the
        # calibration data any other way would void the guarantee.
        grid = np.maximum.accumulate(s[:-1], axis=0).ravel()
    lam = np.unique(np.append(np.asarray(grid, dtype=np.float64), np.inf))[::-1]  # [T] desc
    if np.any(np.isnan(lam)):
        raise ConfigError("grid contains NaN; pass finite thresholds (or +inf).")
    loss = (full[None, :] & ~c).astype(np.float64)  # [K, N]: full model right, exit k wrong
    early = np.zeros(s.shape)
    early[:-1] = 1.0  # [K, N]: 1 where leaving before the last exit
    losses = np.rint(_shared_threshold_sums(s, loss, lam)).astype(np.int64)  # [T]
    exits = _shared_threshold_sums(s, early, lam)  # [T]
    return lam, losses, exits, s.shape[1]


def _stop_index(ok: np.ndarray) -> tuple[int, int]:
    """Fixed-sequence walk over a descending grid while `ok` holds.

    Returns the index of the last grid point passed (-1 if the first one fails) and how many
    hypotheses were examined (the passed ones plus the one that stopped the walk).
    """
    failed = np.flatnonzero(~ok)
    stop = int(failed[0]) if failed.size else ok.size
    return stop - 1, min(stop + 1, ok.size)


def _result(path: tuple, j: int, tested: int, p: Any, reason: str, **fields) -> RiskControlResult:
    """Result at grid index j; j = -1 (nothing passed) reports grid[0] = +inf, never exit early."""
    lam, losses, exits, n = path
    i = max(j, 0)
    return RiskControlResult(
        threshold=float(lam[i]),
        n=n,
        empirical_risk=float(losses[i] / n),
        p_value=None if p is None else float(p[i]),
        early_exit_fraction=float(exits[i] / n),
        tested=tested,
        feasible=j >= 0,
        reason=reason,
        **fields,
    )


def risk_controlled_threshold(
    scores: Any,
    correct: Any,
    full_correct: Any,
    delta: float,
    epsilon: float,
    grid: Any = None,
    bound: str = "binomial",
) -> RiskControlResult:
    """Shared threshold λ with P(accuracy drop vs the full model > delta) <= epsilon.

    Learn-then-Test (arXiv 2110.01052) with fixed-sequence testing. Loss of sample i at λ: 1 if
    the full model is right (full_correct[i]) and the exit chosen at λ is wrong; its mean bounds
    the accuracy drop. For λ from highest (fewest exits) down, H_λ: E[loss(λ)] > delta is tested
    with p-value P(Binom(n, delta) <= n·R̂(λ)) ("binomial", exact) or exp(-2n(delta - R̂)_+²)
    ("hoeffding"); testing stops at the first p > epsilon and the lowest rejected λ is returned.
    The guarantee is over the draw of n i.i.d. calibration samples from the deployment
    distribution; `grid` (if given) must be fixed before seeing them. If nothing is rejected,
    λ = +inf (the full model, exit K-1; it meets the bound when exit K-1 *is* the full model).
    """
    if not 0.0 < float(epsilon) < 1.0:
        raise ConfigError(f"epsilon must lie in (0, 1), got {epsilon!r}; e.g. 0.1 for 90%.")
    if bound not in BOUNDS:
        raise ConfigError(f"unknown bound {bound!r}; pick one of {', '.join(BOUNDS)}.")
    path = _risk_path(scores, correct, full_correct, delta, grid)
    lam, losses, _, n = path
    p = _p_values(losses, n, float(delta), bound)  # [T]
    j, tested = _stop_index(p <= epsilon)
    reason = (
        f"rejected E[loss] > {delta} for every threshold >= {lam[j]:.6g} at level {epsilon} "
        f"({bound} p-values, n={n})"
        if j >= 0
        else f"no threshold passed: even never exiting early has p = {p[0]:.3g} > epsilon = "
        f"{epsilon} with n={n} calibration samples; use the full model (threshold +inf), more "
        "calibration data or a larger delta"
    )
    return _result(
        path, j, tested, p, reason, delta=float(delta), epsilon=float(epsilon), bound=bound
    )


def empirical_risk_threshold(
    scores: Any, correct: Any, full_correct: Any, delta: float, grid: Any = None
) -> RiskControlResult:
    """The naive rule, for comparison only: the lowest λ with empirical risk <= delta.

    Scans the same descending grid as `risk_controlled_threshold` and stops at the first λ whose
    calibration-set risk exceeds delta. This is NOT a guarantee: the true risk of the chosen λ
    exceeds delta in a large share of calibration draws (often about half).
    """
    path = _risk_path(scores, correct, full_correct, delta, grid)
    _, losses, _, n = path
    j, tested = _stop_index(losses / n <= delta)
    reason = "empirical risk <= delta on the calibration set only; no statistical guarantee"
    return _result(
        path, j, tested, None, reason, delta=float(delta), epsilon=None, bound="empirical"
    )
