"""Tests of ponder._calibration.metrics: exit simulation, cost-accuracy curves, ECE, AUROC and EEFP."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ponder._calibration.metrics import (
    CostAccuracyCurve,
    accuracy_at_budgets,
    auroc,
    cost_accuracy_curve,
    curve_auc,
    eefp_scores,
    exit_outcome,
    expected_calibration_error,
    simulate_exits,
)
from ponder._core.errors import ConfigError

SCORES = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.5], [0.0, 0.0, 0.0]])  # K=3, N=3


def _random_model(k: int, n: int, seed: int, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    scores = rng.random((k, n))
    if decimals is not None:
        scores = np.round(scores, decimals)  # many ties
    correct = rng.random((k, n)) < np.linspace(0.5, 0.9, k)[:, None]
    costs = np.linspace(0.2, 1.1, k)
    return scores, correct, costs


# ----------------------------------------------------------------------------- simulate_exits


def test_simulate_exits_first_exit_at_or_above_threshold():
    # sample 0 leaves at exit 0; sample 1 at exit 1; sample 2 ties the threshold, so it leaves
    np.testing.assert_array_equal(simulate_exits(SCORES, 0.5), [0, 1, 0])
    np.testing.assert_array_equal(simulate_exits(SCORES, [0.95, 0.5]), [2, 1, 1])


def test_simulate_exits_extremes():
    np.testing.assert_array_equal(simulate_exits(SCORES, np.inf), [2, 2, 2])
    np.testing.assert_array_equal(simulate_exits(SCORES, -np.inf), [0, 0, 0])
    np.testing.assert_array_equal(simulate_exits(SCORES[:1], 0.5), [0, 0, 0])  # single exit


def test_simulate_exits_nan_score_never_exits():
    scores = np.array([[np.nan, 0.9], [np.nan, 0.1], [0.0, 0.0]])
    np.testing.assert_array_equal(simulate_exits(scores, 0.0), [2, 0])


def test_simulate_exits_rejects_bad_shapes():
    with pytest.raises(ConfigError, match="thresholds must be a number or 2 numbers"):
        simulate_exits(SCORES, [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="2-D array"):
        simulate_exits(np.zeros(4), 0.5)
    with pytest.raises(ConfigError, match="none NaN"):
        simulate_exits(SCORES, np.nan)


def test_exit_outcome_hand_example():
    correct = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=bool)
    out = exit_outcome(SCORES, correct, [1.0, 2.0, 3.0], 0.5)  # exits [0, 1, 0]
    assert out.accuracy == pytest.approx(2 / 3)
    assert out.mean_cost == pytest.approx(4 / 3)
    np.testing.assert_allclose(out.exit_fractions(3), [2 / 3, 1 / 3, 0.0])
    with pytest.raises(ConfigError, match="correct has shape"):
        exit_outcome(SCORES, correct[:2], [1.0, 2.0, 3.0], 0.5)
    with pytest.raises(ConfigError, match="costs must be 3"):
        exit_outcome(SCORES, correct, [1.0, 2.0], 0.5)


# ----------------------------------------------------------------------------- curves


def test_curve_endpoints_all_first_and_all_last():
    scores, correct, costs = _random_model(4, 1000, seed=0)
    curve = cost_accuracy_curve(scores, correct, costs, full_cost=1.0)
    assert curve.flops_fraction[0] == pytest.approx(costs[0])  # everyone leaves at exit 0
    assert curve.accuracy[0] == pytest.approx(correct[0].mean())
    assert curve.flops_fraction[-1] == pytest.approx(costs[-1])  # everyone reaches the end
    assert curve.accuracy[-1] == pytest.approx(correct[-1].mean())
    assert np.all(np.diff(curve.thresholds) > 0)
    assert len(curve.thresholds) <= 201


@pytest.mark.parametrize("decimals", [None, 1])
def test_curve_matches_brute_force(decimals):
    scores, correct, costs = _random_model(5, 2000, seed=1, decimals=decimals)
    curve = cost_accuracy_curve(scores, correct, costs, full_cost=2.0)
    for i, th in enumerate(curve.thresholds):
        out = exit_outcome(scores, correct, costs, th)
        assert curve.accuracy[i] == pytest.approx(out.accuracy, abs=1e-12)
        assert curve.flops_fraction[i] == pytest.approx(out.mean_cost / 2.0, abs=1e-12)


def test_curve_integer_scores_use_every_value():
    scores = np.array([[0, 1, 2, 3], [1, 1, 3, 3], [0, 0, 0, 0]], dtype=float)  # patience counts
    correct = np.ones_like(scores, dtype=bool)
    curve = cost_accuracy_curve(scores, correct, [1.0, 2.0, 3.0], full_cost=3.0)
    np.testing.assert_allclose(curve.thresholds[:-1], [0, 1, 2, 3])  # running maxima
    assert 3 < curve.thresholds[-1] < 3.001


def test_curve_per_exit_thresholds_and_json():
    scores, correct, costs = _random_model(3, 500, seed=2)
    th = np.array([[0.5, 0.5], [0.9, np.inf]])
    curve = cost_accuracy_curve(scores, correct, costs, full_cost=1.0, thresholds=th)
    for i, row in enumerate(th):
        out = exit_outcome(scores, correct, costs, row)
        assert curve.accuracy[i] == pytest.approx(out.accuracy)
        assert curve.flops_fraction[i] == pytest.approx(out.mean_cost)
    d = json.loads(json.dumps(curve.to_dict(), allow_nan=False))
    assert d["thresholds"][1] == [0.9, "inf"]
    with pytest.raises(ConfigError, match=r"\[T, 2\]"):
        cost_accuracy_curve(scores, correct, costs, 1.0, thresholds=np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="full_cost must be"):
        cost_accuracy_curve(scores, correct, costs, 0.0)


HAND_CURVE = CostAccuracyCurve(
    thresholds=np.array([0.1, 0.5, 0.9]),
    flops_fraction=np.array([0.2, 0.5, 0.8]),
    accuracy=np.array([0.6, 0.8, 0.7]),
)


def test_accuracy_at_budgets_hand_example():
    got = accuracy_at_budgets(HAND_CURVE, (0.1, 0.25, 0.5, 1.0))
    assert list(got) == [0.1, 0.25, 0.5, 1.0]
    assert np.isnan(got[0.1])  # no point is that cheap
    assert [got[0.25], got[0.5], got[1.0]] == pytest.approx([0.6, 0.8, 0.8])


def test_curve_auc_hand_example():
    # envelope: 0 on [0, .2), 0.6 on [.2, .5), 0.8 on [.5, 1] (the 0.7 point is dominated)
    assert curve_auc(HAND_CURVE) == pytest.approx(0.3 * 0.6 + 0.5 * 0.8)
    assert curve_auc(HAND_CURVE, 0.25, 0.75) == pytest.approx((0.25 * 0.6 + 0.25 * 0.8) / 0.5)
    with pytest.raises(ConfigError, match="lo < hi"):
        curve_auc(HAND_CURVE, 0.5, 0.5)


# ----------------------------------------------------------------------------- ECE, AUROC, EEFP


def test_ece_hand_example():
    # 2 bins: (0, .5] holds .2, .4 (acc 1/2, conf .3); (.5, 1] holds .6, .9 (acc 1, conf .75)
    ece = expected_calibration_error([0.2, 0.4, 0.6, 0.9], [0, 1, 1, 1], n_bins=2)
    assert ece == pytest.approx(0.5 * 0.2 + 0.5 * 0.25)
    assert expected_calibration_error([0.75] * 4, [1, 1, 1, 0]) == pytest.approx(0.0)
    assert expected_calibration_error([0.0, 1.0], [0, 1]) == pytest.approx(0.0)
    with pytest.raises(ConfigError, match=r"probabilities in \[0, 1\]"):
        expected_calibration_error([1.5], [1])
    with pytest.raises(ConfigError, match="n_bins must be a positive integer"):
        expected_calibration_error([0.5], [1], n_bins=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    score = np.round(rng.random(400), 1)  # 11 distinct values: heavy ties
    target = rng.random(400) < 0.3 + 0.4 * score
    assert auroc(score, target) == pytest.approx(roc_auc_score(target, score), abs=1e-12)


def test_auroc_edge_cases():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert auroc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5
    assert np.isnan(auroc([0.1, 0.2], [1, 1]))
    with pytest.raises(ConfigError, match="equal length"):
        auroc([0.1, 0.2], [1])


def test_eefp_hand_example():
    correct = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=bool)
    conf = np.array([[0.9, 0.4, 0.7, 0.7], [0.8, 0.3, 0.5, 0.6], [0.5, 0.5, 0.5, 0.5]])
    # targets: head 0 -> [1, 0, 0, 1] (s1, s2: a later head is right; s3: all heads wrong)
    #          head 1 -> [1, 1, 0, 1];  head 2 -> all 1 (always optimal at the end) -> NaN
    # head 0: positives {.9, .7}, negatives {.4, .7}: pairs 1 + 1 + 1 + 0.5 (tie) = 3.5 / 4
    # head 1: positives {.8, .3, .6}, negative {.5}: pairs 1 + 0 + 1 = 2 / 3
    got = eefp_scores(conf, correct)
    np.testing.assert_allclose(got[:2], [0.875, 2 / 3])
    assert np.isnan(got[2])
    with pytest.raises(ConfigError, match="correct has shape"):
        eefp_scores(conf, correct[:, :3])
