"""Tests of ponder._calibration.thresholds: budget-matched thresholds and the Learn-then-Test guarantee."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from scipy.stats import binom

from ponder._calibration.metrics import exit_outcome, simulate_exits
from ponder._calibration.thresholds import (
    _binom_cdf,
    _geometric_shares,
    empirical_risk_threshold,
    risk_controlled_threshold,
    thresholds_for_budget,
)
from ponder._core.errors import ConfigError

COSTS = np.array([0.2, 0.4, 0.6, 0.8, 1.05])  # K=5; the last exit pays for the heads too


def _pool(n: int, seed: int, k: int = 4):
    """A synthetic early-exit model: later exits are more accurate, confidence tracks correctness.

    Sample difficulty z is shared by all exits; exit k is right when skill_k - z + noise > 0, and
    its confidence is a noisy sigmoid of that same margin (so confident exits are usually right).
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)  # [N]
    skill = np.linspace(-0.2, 1.6, k)[:, None]  # [K, 1]: accuracy ~0.43 .. ~0.92
    margin = skill - z + 0.6 * rng.normal(size=(k, n))  # [K, N]
    conf = 1 / (1 + np.exp(-(1.5 * margin + 0.8 * rng.normal(size=(k, n)))))
    return conf, margin > 0


def _risk(conf, correct, full_correct, lam) -> float:
    """Mean loss at shared threshold lam: full model right and the chosen exit wrong."""
    idx = simulate_exits(conf, lam)
    return float(np.mean(full_correct & ~correct[idx, np.arange(conf.shape[1])]))


# ----------------------------------------------------------------------------- budget matching


@pytest.mark.parametrize("budget", [0.3, 0.5, 0.7, 0.9, 1.0])
def test_budget_thresholds_realise_the_budget(budget):
    conf, correct = _pool(5000, seed=0, k=5)
    th = thresholds_for_budget(conf, COSTS, full_cost=1.0, budget=budget)
    out = exit_outcome(conf, correct, COSTS, th)
    # continuous scores: exit counts are exactly the rounded geometric shares, so the cost is
    # off only by rounding (at most one sample per exit, ~K * 1.05 / N = 1e-3)
    assert out.mean_cost == pytest.approx(budget, abs=2e-3)
    goal = np.round(np.cumsum(_geometric_shares(COSTS, budget)) * 5000).astype(int)
    np.testing.assert_array_equal(np.bincount(out.exit_idx, minlength=5), np.diff(goal, prepend=0))


def test_budget_thresholds_on_new_data_are_an_estimate():
    val, _ = _pool(5000, seed=0, k=5)
    test, _ = _pool(5000, seed=1, k=5)
    th = thresholds_for_budget(val, COSTS, full_cost=1.0, budget=0.5)
    cost = exit_outcome(test, np.ones(test.shape, bool), COSTS, th).mean_cost
    assert cost == pytest.approx(0.5, abs=0.02)  # same distribution, sampling error only


def test_budget_extremes_and_errors():
    conf, _ = _pool(200, seed=0, k=5)
    np.testing.assert_array_equal(thresholds_for_budget(conf, COSTS, 1.0, 1.2), [np.inf] * 4)
    th = thresholds_for_budget(conf, COSTS, 1.0, 0.2)  # everyone must leave at exit 0
    np.testing.assert_array_equal(simulate_exits(conf, th), 0)
    with pytest.raises(ConfigError, match=r"below the cost of the first exit.*\[0.2000, 1.0500\]"):
        thresholds_for_budget(conf, COSTS, 1.0, 0.1)
    with pytest.raises(ConfigError, match="budget must be a positive"):
        thresholds_for_budget(conf, COSTS, 1.0, -0.5)
    with pytest.raises(ConfigError, match="non-decreasing"):
        thresholds_for_budget(conf, COSTS[::-1], 1.0, 0.5)


def test_budget_with_tied_scores_warns():
    scores = np.zeros((5, 100))  # every score tied: the first threshold lets everyone out
    with pytest.warns(UserWarning, match="tied"):
        thresholds_for_budget(scores, COSTS, 1.0, 0.5)


# ----------------------------------------------------------------------------- risk control


def test_risk_control_guarantee_holds_and_naive_rule_does_not():
    """P(true risk of the LTT threshold <= delta) >= 1 - epsilon over calibration draws.

    The pool of 20,000 samples *is* the population: calibration sets are i.i.d. draws from it
    with replacement and the true risk of a threshold is its mean loss over the whole pool.
    """
    delta, epsilon, n, reps = 0.02, 0.1, 500, 300
    conf, correct = _pool(20_000, seed=0)
    full = correct[-1]
    rng = np.random.default_rng(1)
    ltt_bad = naive_bad = 0
    for _ in range(reps):
        i = rng.integers(0, conf.shape[1], n)
        ltt = risk_controlled_threshold(conf[:, i], correct[:, i], full[i], delta, epsilon)
        naive = empirical_risk_threshold(conf[:, i], correct[:, i], full[i], delta)
        assert ltt.threshold >= naive.threshold  # a rejection implies empirical risk <= delta
        ltt_bad += _risk(conf, correct, full, ltt.threshold) > delta
        naive_bad += _risk(conf, correct, full, naive.threshold) > delta
    # Monte-Carlo allowance: if the violation probability were exactly epsilon, the violation
    # count would be Binomial(300, 0.1); its mean + 3 sd is 0.1 + 3 * sqrt(0.1 * 0.9 / 300)
    # = 0.152 as a fraction, exceeded with probability ~0.2% (seeds are fixed; measured: 0.087).
    assert ltt_bad / reps <= epsilon + 3 * np.sqrt(epsilon * (1 - epsilon) / reps)
    # the naive rule stops where the empirical risk crosses delta, so its true risk exceeds
    # delta about half the time (measured: 0.62); this is why the guarantee matters
    assert naive_bad / reps >= 0.3
    assert naive_bad > 3 * ltt_bad


def test_risk_control_on_disjoint_splits_of_a_finite_pool():
    """Random calibration/test splits of one finite pool, risk measured on the test part.

    Looser than the i.i.d. test: the test risk of 5,000 samples is itself noisy (sd ~0.002 at
    risk 0.02), so a threshold whose risk is just under delta can read just over it. We allow
    twice epsilon (measured: 0.055 for LTT, 0.60 for the naive rule).
    """
    delta, epsilon, reps = 0.02, 0.1, 200
    conf, correct = _pool(6000, seed=5)
    full = correct[-1]
    rng = np.random.default_rng(2)
    ltt_bad = naive_bad = 0
    for _ in range(reps):
        perm = rng.permutation(conf.shape[1])
        cal, test = perm[:1000], perm[1000:]
        ltt = risk_controlled_threshold(conf[:, cal], correct[:, cal], full[cal], delta, epsilon)
        naive = empirical_risk_threshold(conf[:, cal], correct[:, cal], full[cal], delta)
        ltt_bad += _risk(conf[:, test], correct[:, test], full[test], ltt.threshold) > delta
        naive_bad += _risk(conf[:, test], correct[:, test], full[test], naive.threshold) > delta
    assert ltt_bad / reps <= 2 * epsilon
    assert naive_bad / reps >= 0.3


def test_risk_control_result_fields_and_json():
    conf, correct = _pool(2000, seed=3)
    full = correct[-1]
    res = risk_controlled_threshold(conf, correct, full, delta=0.03, epsilon=0.1)
    assert res.feasible and np.isfinite(res.threshold)
    assert res.n == 2000 and res.bound == "binomial" and res.tested >= 2
    assert res.empirical_risk == pytest.approx(_risk(conf, correct, full, res.threshold))
    assert res.p_value == pytest.approx(binom.cdf(round(res.empirical_risk * 2000), 2000, 0.03))
    assert res.p_value <= 0.1
    idx = simulate_exits(conf, res.threshold)
    assert res.early_exit_fraction == pytest.approx(np.mean(idx < 3))
    assert json.loads(json.dumps(res.to_dict(), allow_nan=False))["threshold"] == res.threshold


def test_risk_control_infeasible_falls_back_to_full_model():
    conf, correct = _pool(50, seed=4)  # P(Binom(50, .02) = 0) = 0.36 > 0.1: nothing can pass
    res = risk_controlled_threshold(conf, correct, correct[-1], delta=0.02, epsilon=0.1)
    assert not res.feasible and res.threshold == np.inf and res.tested == 1
    assert res.early_exit_fraction == 0.0 and "no threshold passed" in res.reason
    assert res.to_dict()["threshold"] == "inf"


def test_hoeffding_is_more_conservative_than_binomial():
    conf, correct = _pool(20_000, seed=6)
    args = (conf, correct, correct[-1], 0.05, 0.1)
    exact = risk_controlled_threshold(*args)
    hoeffding = risk_controlled_threshold(*args, bound="hoeffding")
    assert exact.feasible and hoeffding.feasible
    assert hoeffding.threshold > exact.threshold


def test_risk_control_user_grid():
    conf, correct = _pool(2000, seed=3)
    grid = np.linspace(0.5, 1.0, 11)
    res = risk_controlled_threshold(conf, correct, correct[-1], 0.03, 0.1, grid=grid)
    assert res.threshold in set(grid) | {np.inf}


def test_binomial_cdf_fallback_without_scipy(monkeypatch):
    k = np.array([0, 3, 10, 25, 500])
    expected = binom.cdf(k, 500, 0.02)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # makes the import fail
    np.testing.assert_allclose(_binom_cdf(k, 500, 0.02), expected, rtol=1e-9)


def test_risk_control_errors():
    conf, correct = _pool(100, seed=0)
    full = correct[-1]
    with pytest.raises(ConfigError, match=r"delta must lie in \(0, 1\)"):
        risk_controlled_threshold(conf, correct, full, 0.0, 0.1)
    with pytest.raises(ConfigError, match=r"epsilon must lie in \(0, 1\)"):
        risk_controlled_threshold(conf, correct, full, 0.02, 1.5)
    with pytest.raises(ConfigError, match="pick one of binomial, hoeffding"):
        risk_controlled_threshold(conf, correct, full, 0.02, 0.1, bound="bentkus")
    with pytest.raises(ConfigError, match="full_correct has shape"):
        risk_controlled_threshold(conf, correct, full[:10], 0.02, 0.1)
    with pytest.raises(ConfigError, match="grid contains NaN"):
        empirical_risk_threshold(conf, correct, full, 0.02, grid=[0.5, np.nan])
