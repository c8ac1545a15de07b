"""Tests of ponder._calibration.points: the one builder of operating points, measured on stored
per-exit scores (`ponder.operating_points`, and what `ponder export` writes)."""

import numpy as np
import pytest

import ponder
from ponder._calibration.evaluate import ExitData
from ponder._calibration.points import measure_point, operating_points
from ponder._early_exit.flops import ExitCosts
from ponder.runtime import OperatingPoint

# K=3 exits, N=4 samples; a sample leaves at the first early exit whose score >= threshold
SCORES = np.array([[0.9, 0.2, 0.6, 0.1], [0.95, 0.8, 0.3, 0.2], [1.0, 1.0, 1.0, 1.0]])
CORRECT = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0]], bool)
COSTS = ExitCosts(backbone=(1.0, 2.0, 4.0), heads=(0.5, 0.5), full=5.0)  # exits cost 1.5, 3, 5


def _data() -> ExitData:
    logp = np.zeros((3, 4, 2))
    logp[2, :, 1] = [-5.0, -5.0, -5.0, 0.0]  # the full model: right on samples 0-2 (label 0)
    logp[2, :, 0] = [0.0, 0.0, 0.0, -5.0]
    return ExitData("max_prob", logp, np.zeros(4, int), SCORES, CORRECT, COSTS)


def test_a_measured_point_matches_hand_computed_figures():
    # 0.5 at both exits: samples 0 and 2 leave at exit 0, 1 at exit 1, 3 runs to the end
    p = measure_point(_data(), "half", (0.5, 0.5), moe_tau=0.2, flops_scale=2.0, note="x")
    assert isinstance(p, OperatingPoint) and p.max_stage is None and p.moe_tau == 0.2
    assert p.accuracy == pytest.approx(0.75) and p.accuracy_drop == pytest.approx(0.0)
    assert p.exit_fractions == pytest.approx((0.5, 0.25, 0.25))
    assert p.flops_fraction == pytest.approx(2.0 * (1.5 + 3 + 1.5 + 5) / 4 / 5)
    assert p.extra == {"note": "x"}
    # everyone still running leaves at stage 0: exit 0 is right on samples 0 and 2
    cut = measure_point(_data(), "first", (0.5, 0.5), max_stage=0)
    assert cut.thresholds == (0.5, 0.5) and cut.max_stage == 0
    assert (cut.accuracy, cut.accuracy_drop) == pytest.approx((0.5, 0.25))
    assert cut.exit_fractions == (1.0, 0.0, 0.0) and cut.flops_fraction == pytest.approx(0.3)


def test_the_table_is_a_pareto_front_of_shared_thresholds():
    table = ponder.operating_points(_data())
    assert table and all(type(p) is OperatingPoint for p in table)
    flops = [p.flops_fraction for p in table]
    accuracy = [p.accuracy for p in table]
    assert flops == sorted(flops) and accuracy == sorted(set(accuracy))  # cheaper = less accurate
    for p in table:
        t = p.thresholds[0]
        assert p.thresholds == (t, t) and p.name == f"shared threshold {t:.4g}"
        assert p == measure_point(_data(), p.name, p.thresholds)


def test_by_stage_adds_truncated_rows_only_where_they_change_the_outcome():
    plain = operating_points(_data(), moe_tau=0.4)
    table = operating_points(_data(), by_stage=True, moe_tau=0.4)
    assert [p for p in table if p.max_stage is None] == plain
    assert all(p.moe_tau == 0.4 and ", tau 0.4" in p.name for p in table)
    truncated = [p for p in table if p.max_stage is not None]
    assert truncated and all(
        p.name.endswith(f"all leave by stage {p.max_stage}") for p in truncated
    )
    keys = [(p.max_stage, p.exit_fractions, p.accuracy) for p in table]
    assert len(keys) == len(set(keys))  # no two rows behave alike
    for p in truncated:
        assert p.exit_fractions[p.max_stage + 1 :] == (0.0,) * (2 - p.max_stage)


def test_a_point_round_trips_through_its_manifest_row():
    p = operating_points(_data(), by_stage=True)[-1]
    row = p.to_dict()
    order = "name thresholds max_stage moe_tau accuracy flops_fraction accuracy_drop exit_fractions"
    assert list(row) == order.split()  # the manifest's key order
    assert OperatingPoint.from_dict(row) == p
