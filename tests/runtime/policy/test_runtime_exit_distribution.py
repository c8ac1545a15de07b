"""ExitDistribution: where a point's requests leave, and the expected cost over the exits that
the cost model, the policy and the simulation share."""

from __future__ import annotations

import pytest

from ponder import ConfigError
from ponder.runtime import CostModel, OperatingPoint, Policy
from ponder.runtime._bundle.costs import CostTable, StageCost
from ponder.runtime._policy.points import ExitDistribution

STAGE_MS = (2.0, 8.0, 6.0, 4.0)  # cumulative 2, 10, 16, 20


def _point(fractions=(), max_stage=None):
    return OperatingPoint("p", (0.9, 0.9, 0.9), max_stage, exit_fractions=tuple(fractions))


def test_shares_reach_and_expected_cost_by_hand():
    d = ExitDistribution.of(_point((0.4, 0.3, 0.2, 0.1)), 4)
    assert d.shares == (0.4, 0.3, 0.2, 0.1) and d.last_stage == 3
    assert d.reach == pytest.approx((1.0, 0.6, 0.3, 0.1))
    # 0.4 * 2 + 0.3 * 10 + 0.2 * 16 + 0.1 * 20 = 9.0 = 1 * 2 + 0.6 * 8 + 0.3 * 6 + 0.1 * 4
    assert d.expected(STAGE_MS) == pytest.approx(9.0)
    assert d.quantile_stage(1.0) == 3 and d.quantile_stage(0.7) == 1 and d.quantile_stage(0.4) == 0
    assert d.cost_to_quantile(STAGE_MS, 0.7) == 10.0 and d.cost_to_quantile(STAGE_MS) == 20.0


def test_mass_past_the_last_stage_moves_onto_it_and_no_fractions_mean_the_last_stage():
    d = ExitDistribution.of(_point((0.4, 0.3, 0.2, 0.1), max_stage=1), 4)
    assert d.shares == pytest.approx((0.4, 0.6, 0.0, 0.0)) and d.last_stage == 1
    assert d.expected(STAGE_MS) == pytest.approx(0.4 * 2 + 0.6 * 10)
    assert ExitDistribution.of(_point(), 4).shares == (0.0, 0.0, 0.0, 1.0)
    assert ExitDistribution.of(_point(max_stage=2), 4).expected(STAGE_MS) == 16.0
    with pytest.raises(ConfigError, match="exit_fractions"):
        ExitDistribution.of(_point((0.5, 0.4)), 4)


def test_cost_model_and_policy_predict_the_distributions_expected_cost():
    stages = tuple(StageCost(i, t, t, t) for i, t in enumerate(STAGE_MS))  # 1 W: mJ = ms
    cm = CostModel(4, CostTable("ort", "cpu", 1, 2, stages), tail=0.0)
    point = _point((0.4, 0.3, 0.2, 0.1))
    pred = cm.predict(point)
    assert pred.mean_latency_ms == pytest.approx(9.0) and pred.mean_energy_mj == pytest.approx(9.0)
    assert pred.worst_latency_ms == pytest.approx(20.0)
    decided = Policy([point], cm).decide().prediction
    assert decided.mean_latency_ms == pytest.approx(9.0)
    assert decided.mean_energy_mj == pytest.approx(9.0)
