"""Policy engine on synthetic operating points and cost tables (no model): budgets, battery
rules, hysteresis, EWMA correction, throttling and the explanations."""

from __future__ import annotations

import json
import math

import pytest

from ponder import ConfigError
from ponder.runtime import CostModel, Policy, PolicyRule, PolicySpec
from ponder.runtime._bundle.costs import CostTable, StageCost
from ponder.runtime._policy.points import OperatingPoint
from ponder.runtime._policy.policy import baseline_points
from ponder.runtime._telemetry.state import DeviceState

# Four stages of 2, 8, 6 and 4 ms (cumulative 2, 10, 16, 20); at 1 W, mJ = ms.
STAGE_MS = (2.0, 8.0, 6.0, 4.0)


def _point(name, acc, fractions=(), max_stage=None):
    return OperatingPoint(name, (0.9, 0.9, 0.9), max_stage, None, acc, None, tuple(fractions))


# name: (worst ms, mean ms) -> early (2, 2), mid (10, 6), deep (16, 8.6), most (20, 10.8),
# full (20, 20). Mean energy in mJ equals mean ms.
POINTS = [
    _point("early", 0.80, (1, 0, 0, 0), max_stage=0),
    _point("mid", 0.90, (0.5, 0.5, 0, 0), max_stage=1),
    _point("deep", 0.94, (0.4, 0.3, 0.3, 0), max_stage=2),
    _point("most", 0.97, (0.3, 0.3, 0.2, 0.2)),
    _point("full", 0.98),  # no exit_fractions: everyone runs to the last stage
]


def _table(ms=STAGE_MS, energy=None, batch=1):
    stages = tuple(
        StageCost(i, t * batch, t * batch * 1.1, None if energy is None else energy[i] * batch)
        for i, t in enumerate(ms)
    )
    return CostTable("onnxruntime", "test-cpu", batch, 2, stages, energy_source=None)


def _policy(spec=None, points=POINTS, **cost):
    cost.setdefault("power_w", 1.0)
    cost.setdefault("tail", 0.0)  # budgets on the medians, so the figures above hold
    return Policy(points, CostModel(4, _table(), **cost), spec)


BATTERY_SPEC = PolicySpec(
    default=PolicyRule(latency_ms=12),
    rules=(
        PolicyRule("plenty of battery", battery_above=50, latency_ms=30),
        PolicyRule("low battery", battery_below=20, charging=False, energy_fraction=0.5),
    ),
)


def _battery(percent, charging=False, **kw):
    return DeviceState(battery_percent=percent, charging=charging, **kw)


def test_most_accurate_point_within_the_latency_slo():
    d = _policy(PolicySpec.simple(latency_ms=12)).decide()
    assert d.point.name == "mid" and d.feasible and d.changed
    assert d.prediction.worst_latency_ms == pytest.approx(10)
    assert d.prediction.mean_latency_ms == pytest.approx(6)
    assert d.constraints == {"latency_ms": 12, "energy_mj": None, "min_accuracy": None}
    assert _policy(PolicySpec.simple(latency_ms=17)).decide().point.name == "deep"
    assert _policy().decide().point.name == "full"  # no budgets: the most accurate


def test_energy_cap_at_half_the_full_models_energy():
    spec = PolicySpec(default=PolicyRule(energy_fraction=0.5))
    d = _policy(spec).decide()
    assert d.constraints["energy_mj"] == pytest.approx(10)  # half of 20 mJ
    assert d.point.name == "deep"  # 8.6 mJ; "most" needs 10.8
    assert d.prediction.mean_energy_mj == pytest.approx(8.6)


def test_battery_rules_switch_as_the_battery_falls():
    policy = _policy(BATTERY_SPEC)
    seen = [(d.rule_name, d.point.name) for d in map(policy.decide, map(_battery, (80, 40, 10)))]
    assert seen == [("plenty of battery", "full"), ("default", "mid"), ("low battery", "deep")]
    assert policy.decide(_battery(10, charging=True)).rule_name == "default"


def test_battery_band_stops_flapping_around_fifty_percent():
    policy = _policy(BATTERY_SPEC)
    assert policy.decide(_battery(60)).rule_name == "plenty of battery"
    decisions = [policy.decide(_battery(b)) for b in (49, 51, 49.5, 50, 48.5, 51)]
    assert {d.rule_name for d in decisions} == {"plenty of battery"}
    assert not any(d.changed for d in decisions)
    assert "hysteresis band" in decisions[0].explain()
    assert policy.decide(_battery(47.9)).rule_name == "default"  # past the 2-point band
    assert policy.decide(_battery(49)).rule_name == "default"  # re-entry needs > 50 again
    assert policy.decide(_battery(50.5)).rule_name == "plenty of battery"


def test_without_a_band_the_rule_flaps():
    spec = PolicySpec(default=BATTERY_SPEC.default, rules=BATTERY_SPEC.rules, battery_band=0)
    policy = _policy(spec)
    names = [policy.decide(_battery(b)).rule_name for b in (51, 49, 51, 49)]
    assert names == ["plenty of battery", "default"] * 2


def test_accuracy_margin_keeps_the_current_point():
    points = [_point("a", 0.900, (1, 0, 0, 0), 0), _point("b", 0.904, (0.5, 0.5, 0, 0), 1)]
    rules = (PolicyRule("tight", battery_below=50, latency_ms=5),)
    loose = PolicyRule(latency_ms=50)
    policy = _policy(PolicySpec(default=loose, rules=rules, accuracy_margin=0.01), points)
    assert policy.decide(_battery(30)).point.name == "a"
    d = policy.decide(_battery(90))
    assert d.point.name == "a" and not d.changed and d.feasible
    assert "accuracy_margin" in d.explain() and "'b'" in d.explain()
    eager = _policy(PolicySpec(default=loose, rules=rules, accuracy_margin=0.001), points)
    eager.decide(_battery(30))
    assert eager.decide(_battery(90)).point.name == "b"


def test_a_broken_budget_forces_a_switch_despite_hysteresis():
    policy = _policy(PolicySpec(default=PolicyRule(latency_ms=17), accuracy_margin=1.0))
    assert policy.decide().point.name == "deep"
    d = policy.decide(DeviceState(speed=0.9))  # deep: 16 / 0.9 = 17.8 ms > 17
    assert d.point.name == "mid" and d.changed
    assert "left 'deep': it breaks a budget" in d.explain()
    assert policy.decide().point.name == "mid"  # back at full speed: deep gains < margin 1.0


def test_min_requests_delays_a_move_to_a_better_point():
    rules = (PolicyRule("tight", battery_below=50, latency_ms=12),)
    spec = PolicySpec(default=PolicyRule(latency_ms=30), rules=rules, min_requests=3)
    policy = _policy(spec)
    assert policy.decide(_battery(30)).point.name == "mid"
    names = [policy.decide(_battery(90)).point.name for _ in range(3)]
    assert names == ["mid", "mid", "full"]


def test_nothing_feasible_runs_the_cheapest_and_says_so():
    d = _policy(PolicySpec.simple(latency_ms=1)).decide()
    assert d.point.name == "early" and not d.feasible
    assert "no point meets the budgets" in d.explain()
    assert d.to_dict()["feasible"] is False


def test_accuracy_floor_minimises_energy():
    policy = _policy(PolicySpec(default=PolicyRule(min_accuracy=0.9)))
    d = policy.decide()
    assert d.point.name == "mid" and d.feasible  # 6 mJ: the cheapest with accuracy >= 0.9
    assert "least mean energy" in d.explain()
    d = _policy(PolicySpec(default=PolicyRule(min_accuracy=0.99, latency_ms=17))).decide()
    assert d.point.name == "deep" and not d.feasible  # floor unreachable: best within budgets


def test_ewma_moves_to_an_earlier_point_and_converges():
    policy = _policy(PolicySpec.simple(latency_ms=12))
    assert policy.decide().point.name == "mid"
    for _ in range(40):
        policy.observe(1, 20.0)  # stage 1 runs at 20 ms, not 8
    assert policy.cost_model.stage_latency_ms()[1] == pytest.approx(20.0, rel=1e-3)
    d = policy.decide()
    assert d.point.name == "early" and d.changed
    # stage 0 was never run: its table figure scales by the drift (20 / 8 = 2.5x): 2 -> 5 ms
    assert policy.cost_model.drift == pytest.approx(2.5, rel=1e-3)
    assert "predicted p99 latency 25 ms > 12 ms" in d.explain()
    pred = policy.cost_model.predict(POINTS[1])
    assert pred.worst_latency_ms == pytest.approx(25.0, rel=1e-3)


def test_ewma_first_step_and_batch_normalisation():
    cm = CostModel(4, _table(batch=4), alpha=0.5)
    assert cm.stage_latency_ms() == pytest.approx(list(STAGE_MS))  # per sample
    cm.observe(0, 24.0, energy_mj=8.0, batch=4)  # 6 ms and 2 mJ per sample
    assert cm.stage_latency_ms()[0] == pytest.approx(4.0)  # 2 + 0.5 * (6 - 2)
    assert cm.stage_energy_mj() is None  # stages 1..3 have no energy and no power_w


def test_throttling_shifts_the_choice_and_observe_undoes_it():
    policy = _policy(PolicySpec.simple(latency_ms=20))
    assert policy.decide().point.name == "full"
    d = policy.decide(DeviceState(speed=0.5))  # every stage takes twice as long
    assert d.point.name == "mid" and d.prediction.worst_latency_ms == pytest.approx(20)
    assert "at clock speed 0.5" in d.explain()
    policy.observe(1, 16.0)  # measured while throttled: 8 ms at full clock
    assert policy.cost_model.stage_latency_ms()[1] == pytest.approx(8.0)


def test_explanation_names_the_rule_and_the_budget():
    policy = _policy(BATTERY_SPEC)
    text = policy.decide(_battery(10)).explain()
    assert "rule 'low battery' holds: battery 10% (below 20), not charging" in text
    assert "energy budget 10 mJ per inference (0.5 × the full model's 20 mJ)" in text
    assert "more accurate 'most' (0.970) is out: predicted energy 10.8 mJ > 10 mJ" in text
    text = policy.decide(_battery(35)).explain()
    assert "no rule holds (battery 35%, not charging): [default] budgets apply" in text
    assert "latency budget 12 ms (p99); predicted 10 ms" in text
    assert "cost table onnxruntime on test-cpu" in text and "latency × 1 W" in text


def test_repeated_decisions_are_cached_and_json_ready():
    policy = _policy(BATTERY_SPEC)
    first, again = policy.decide(_battery(80)), policy.decide(_battery(80, time_s=5.0))
    assert first.changed and not again.changed and again.point is first.point
    d = json.loads(json.dumps(again.to_dict()))
    assert d["rule"] == "plenty of battery" and d["reasons"] == again.reasons


def test_costs_learned_from_flops_without_a_table():
    cm = CostModel(4, stage_flops=(1e6, 4e6, 3e6, 2e6))
    policy = Policy(POINTS, cm, PolicySpec.simple(latency_ms=12))
    d = policy.decide()
    assert d.point.name == "early" and not d.feasible and math.isnan(d.prediction.worst_latency_ms)
    assert "not known yet" in d.explain()
    policy.observe(0, 2.0)  # 2 ms per MFLOP: stages 2, 8, 6, 4 ms as in the table
    assert cm.stage_latency_ms() == pytest.approx(list(STAGE_MS))
    assert policy.decide().point.name == "mid"


def test_cost_model_errors_say_what_to_do():
    with pytest.raises(ConfigError, match="ponder profile BUNDLE"):
        CostModel(4)
    with pytest.raises(ConfigError, match="3 stages at batch 1 for a 4-stage bundle"):
        CostModel(4, CostTable("ort", "cpu", 1, 2, _table().stages[:3]))
    with pytest.raises(ConfigError, match="stage 7 is out of range"):
        CostModel(4, _table()).observe(7, 1.0)
    with pytest.raises(ConfigError, match="exit_fractions"):
        CostModel(4, _table()).predict(_point("bad", 0.9, (0.5, 0.5)))
    with pytest.raises(ConfigError, match="no energy figures"):
        Policy(POINTS, CostModel(4, _table()), PolicySpec.simple(energy_mj=5))


def test_energy_basis_and_truncated_points():
    assert CostModel(4, _table()).energy_basis.startswith("none")
    assert CostModel(4, _table(), power_w=2.0).energy_basis == "latency × 2 W"
    measured = CostModel(4, _table(energy=(1, 2, 3, 4)), tail=0.0)
    assert measured.energy_basis == "measured (cost table)"
    assert measured.predict(POINTS[-1]).mean_energy_mj == pytest.approx(10)
    cut = _point("cut", 0.9, (0.2, 0.2, 0.2, 0.4), max_stage=1)  # mass past stage 1 lands there
    pred = measured.predict(cut, speed=0.5)
    assert pred.worst_latency_ms == pytest.approx(20)  # 10 ms at half speed
    assert pred.mean_latency_ms == pytest.approx(16.8)  # (0.2 * 2 + 0.8 * 10) / 0.5


def test_baseline_points_run_under_a_policy():
    full, earliest = baseline_points(3)
    assert full.last_stage(4) == 3 and earliest.last_stage(4) == 0
    d = _policy(PolicySpec.simple(latency_ms=12), [full, earliest]).decide()
    assert d.point is earliest and d.prediction.accuracy is None


def test_worst_case_latency_adds_the_tail_and_the_request_overhead():
    # the table's p90 is 1.1x the median: deviation 0.1 x stage time; tail 3 -> +30%
    policy = _policy(PolicySpec.simple(latency_ms=12), tail=3.0)
    d = policy.decide()
    assert d.point.name == "early"  # "mid" needs 10 ms at the median, 13 ms in the tail
    assert d.prediction.worst_latency_ms == pytest.approx(2.0 * 1.3)
    policy.observe_request(5.0)  # alpha 0.2: 1 ms per request outside the stages
    assert policy.decide().prediction.worst_latency_ms == pytest.approx(2.6 + 1.0)
    assert policy.decide().prediction.mean_latency_ms == pytest.approx(2.0 + 1.0)


def test_observed_jitter_widens_the_tail():
    cm = CostModel(4, _table(), tail=2.0)
    for ms in (2.0, 4.0, 2.0, 4.0, 2.0, 4.0):
        cm.observe(0, ms)
    assert cm.stage_tail_ms()[0] > cm.stage_latency_ms()[0] + 1.0


def test_latency_quantile_lets_rare_deep_samples_past_the_budget():
    # "most" sends 2% of samples to the last stage (20 ms): within 12 ms for 98% of requests
    rare = _point("rare deep", 0.96, (0.5, 0.48, 0.0, 0.02))
    points = [*POINTS[:2], rare]
    at_98 = _policy(PolicySpec(default=PolicyRule(latency_ms=12), latency_quantile=0.98), points)
    assert at_98.decide().point.name == "rare deep"
    every = _policy(PolicySpec(default=PolicyRule(latency_ms=12), latency_quantile=1.0), points)
    d = every.decide()
    assert d.point.name == "mid"
    assert (
        "more accurate 'rare deep' (0.960) is out: predicted worst-case latency 20 ms"
        in d.explain()
    )


def test_unobserved_stages_follow_the_machine_wide_drift():
    cm = CostModel(4, _table(), tail=0.0, alpha=1.0)
    cm.observe(0, 1.0)  # stage 0 runs at half its table time: so, probably, does the rest
    assert cm.stage_latency_ms() == pytest.approx([1.0, 4.0, 3.0, 2.0])
    cm.observe(2, 6.0)  # stage 2 back at its table time: the drift follows the latest
    assert cm.stage_latency_ms() == pytest.approx([1.0, 8.0, 6.0, 4.0])


def test_engine_overheads_per_request_and_per_step():
    cm = CostModel(4, _table(), tail=0.0, alpha=1.0)
    cm.observe_request(1.0, 0.5)  # 1 ms per request, 0.5 ms of engine time per stage step
    assert cm.predict(POINTS[-1]).worst_latency_ms == pytest.approx(20 + 4 * 0.5 + 1)
    assert cm.predict(POINTS[0]).mean_latency_ms == pytest.approx(2 + 0.5 + 1)
    assert cm.stage_energy_mj() is None  # overheads are time, not stage energy
    with pytest.raises(ConfigError, match="overheads >= 0"):
        cm.observe_request(1.0, -0.1)


def test_one_spike_moves_an_estimate_but_does_not_set_it():
    cm = CostModel(4, _table(), tail=0.0, alpha=0.5)
    cm.observe(1, 800.0)  # a 100x outlier (a page fault, a preempted core) on an 8 ms stage
    assert cm.stage_latency_ms()[1] == pytest.approx(8 + 0.5 * (24 - 8))  # capped at 3x


def test_a_stage_not_seen_for_long_is_predicted_from_the_table_again():
    from ponder.runtime._policy.cost_model import STALE_AFTER

    cm = CostModel(4, _table(), tail=0.0, alpha=1.0)
    cm.observe(1, 20.0)  # stage 1 looked slow once
    assert cm.stage_latency_ms()[1] == pytest.approx(20.0)
    for _ in range(STALE_AFTER + 1):
        cm.observe(0, 2.0)  # only stage 0 runs afterwards, at its table time (drift 1)
    assert cm.stage_latency_ms()[1] == pytest.approx(8.0)  # back to the table: worth a retry
