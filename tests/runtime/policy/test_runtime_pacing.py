"""Energy pacing ("3% of the battery an hour"): the [pacing] table, the pacer's arithmetic, and a
synthetic policy moving to cheaper points as a window's budget runs down and back after it."""

from __future__ import annotations

import json
import math

import pytest
from test_runtime_policy import _policy

from ponder import ConfigError
from ponder.runtime import PolicyRule, PolicySpec, load_policy
from ponder.runtime._policy.pacing import Pacer, round_down
from ponder.runtime._policy.spec import EnergyPacing
from ponder.runtime._telemetry.state import DeviceState

# 0.025% of a 1 Wh battery is 900 mJ: over a 100 s window at 1 request/s, 9 mJ per request,
# which affords "deep" (8.6 mJ at 1 W) but not "most" (10.8) or "full" (20); "mid" is 6, "early" 2.
PACING = EnergyPacing(battery_percent=0.025, window_s=100, battery_wh=1)


def _at(t, charging=None):
    return DeviceState(time_s=float(t), charging=charging)


def _serve(policy, t, overspend=1.0):
    """One request at time t, spending `overspend` × the chosen point's predicted energy."""
    d = policy.decide(_at(t))
    policy.spend(d.prediction.mean_energy_mj * overspend, 1)
    return d


def test_pacing_table_parses_round_trips_and_needs_energy(tmp_path):
    assert PACING.budget_mj == pytest.approx(900)
    spec = PolicySpec(default=PolicyRule(latency_ms=40), pacing=EnergyPacing(3, battery_wh=15))
    assert spec.needs_energy and spec.pacing.window_s == 3600
    assert spec.pacing.budget_mj == pytest.approx(0.03 * 15 * 3.6e6)  # 1620 J
    assert PolicySpec.from_dict(spec.to_dict()) == spec
    (tmp_path / "p.json").write_text(json.dumps(spec.to_dict()))
    assert load_policy(tmp_path / "p.json") == spec
    toml = "[pacing]\nbattery_percent = 3\nbattery_wh = 15\n[default]\nlatency_ms = 40\n"
    (tmp_path / "p.toml").write_text(toml)
    assert load_policy(tmp_path / "p.toml") == spec
    assert "pacing" not in PolicySpec().to_dict()  # files without it keep their shape


@pytest.mark.parametrize(
    ("pacing", "fragment"),
    [
        ({"battery_percent": 3}, "battery_wh is missing: the battery's capacity in Wh"),
        ({"battery_percent": 3}, "(1 Wh = 3600 J)"),
        ({"battery_wh": 15}, "battery_percent is missing"),
        ({"battery_percent": 0, "battery_wh": 15}, "battery_percent = 0 is outside (0, 100]"),
        ({"battery_percent": 120, "battery_wh": 15}, "battery_percent = 120 is outside"),
        ({"battery_percent": 3, "battery_wh": 15, "window_s": 0}, "window_s = 0 is outside"),
        ({"battery_percent": 3, "battery_wh": math.inf}, "battery_wh must be finite"),
        ({"battery_percent": "3", "battery_wh": 15}, "battery_percent must be a number"),
        ({"battery_percent": 3, "battery_wh": 15, "window": 60}, "did you mean 'window_s'?"),
        ([3], "[pacing] must be a table"),
    ],
)
def test_pacing_errors_say_what_to_fix(pacing, fragment):
    with pytest.raises(ConfigError, match="pacing") as err:
        PolicySpec.from_dict({"pacing": pacing})
    assert fragment in str(err.value)


def test_a_pacing_policy_needs_energy_figures():
    with pytest.raises(ConfigError, match="no energy figures"):
        _policy(PolicySpec(pacing=PACING), power_w=None)


def test_allowance_is_the_unspent_budget_over_the_requests_expected():
    pacer = Pacer(PACING)
    pacer.tick(0.0)
    assert pacer.rate is None and pacer.allowance_mj() == 900  # no rate yet: at least 1 request
    for t in range(10):  # one request a second, 5 mJ each
        pacer.tick(float(t))
        pacer.spend(5.0, 1)
    pacer.tick(10.0)
    assert pacer.rate == pytest.approx(1.0) and pacer.left_s == 90
    assert pacer.allowance_mj() == pytest.approx((900 - 50) / 90)
    pacer.spend(400.0)  # e.g. an offload's radio energy: less is left for each request
    assert pacer.allowance_mj() == pytest.approx((900 - 450) / 90)
    pacer.spend(500.0)
    assert pacer.allowance_mj() == 0  # spent: the cheapest point runs
    for t in range(10, 100):
        pacer.tick(float(t))
        pacer.spend(0.0, 1)
    pacer.tick(100.0)  # the next window
    assert pacer.spent_mj == 0 and pacer.start_s == 100 and pacer.left_s == 100
    assert pacer.allowance_mj() == pytest.approx(9.0)
    pacer.tick(200.0)  # no request for 100 s: the rate has decayed, one request may take it all
    assert pacer.rate < 0.01 and pacer.allowance_mj() == 900
    pacer.tick(350.0)  # windows start at multiples of window_s from the first reading
    assert pacer.start_s == 300 and pacer.left_s == 50


def test_nothing_is_counted_or_capped_on_the_charger():
    pacer = Pacer(PACING)
    pacer.tick(0.0, charging=True)
    pacer.spend(5000.0, 1)
    assert pacer.spent_mj == 0 and pacer.allowance_mj() == math.inf
    pacer.tick(1.0, charging=False)
    assert pacer.allowance_mj() == pytest.approx(900 / 99)  # the request still counts for the rate


def test_the_point_gets_cheaper_as_the_window_runs_down_and_recovers_after_it():
    policy = _policy(PolicySpec(pacing=PACING))
    # each request costs 1.5 × its prediction, so the budget runs down faster than planned
    names = [_serve(policy, t, overspend=1.5).point.name for t in range(200)]
    assert names[0] == "full"  # no rate yet: the whole budget for one request
    assert names[1] == "deep"  # 9 mJ per request affords "deep"
    first, second = names[:100], names[100:]
    assert "mid" in first[:20] and "early" in first[80:]  # cheaper as the budget runs down
    assert second[0] == "deep"  # a new window: back to the point the full budget affords
    assert second.index("early") > 80  # and the same run-down again


def test_each_window_stays_within_its_budget_plus_one_request():
    policy = _policy(PolicySpec(pacing=PACING))
    spent = []
    for t in range(300):
        if t % 100 == 0 and t:
            spent.append(policy.pacer.spent_mj)
        _serve(policy, t, overspend=1.5)
    biggest = 20 * 1.5  # the full model, overspent
    assert all(s <= 900 + biggest for s in spent), spent
    assert all(s > 800 for s in spent), spent  # and most of it is used


def test_the_paced_limit_is_in_the_constraints_and_the_cache_key():
    policy = _policy(PolicySpec(default=PolicyRule(energy_mj=8.0), pacing=PACING))
    for t in range(10):
        _serve(policy, t)  # "mid", 6 mJ: the rule's 8 mJ rules out "deep"
    d = policy.decide(_at(10))
    assert d.point.name == "mid" and d.constraints["energy_mj"] == pytest.approx(8.0)
    assert "the rule's own 8 mJ is tighter" in d.explain()
    policy.spend(600.0, 0)  # the same state: only the allowance changes, and so does the choice
    d = policy.decide(_at(10))
    assert d.constraints["energy_mj"] == round_down((900 - 10 * 6 - 600) / 90)  # 2.66 mJ
    assert d.point.name == "early" and d.feasible
    policy.spend(300.0, 0)
    d = policy.decide(_at(10))
    assert d.constraints["energy_mj"] == 0 and d.point.name == "early" and not d.feasible
    assert "the budget is spent, so the cheapest point runs until the next window" in d.explain()


def test_observe_charges_measured_energy_or_the_estimate_and_counts_requests():
    policy = _policy(PolicySpec(pacing=PACING))
    policy.decide(_at(0))
    policy.observe(0, 8.0, 3.0, batch=4)  # measured: 3 mJ for the call; 4 requests begin
    assert policy.pacer.spent_mj == pytest.approx(3.0)
    policy.observe(1, 16.0, batch=2)  # no probe: the estimate, 8 mJ a row (8 ms at 1 W) × 2
    assert policy.pacer.spent_mj == pytest.approx(3.0 + 16.0)
    policy.decide(_at(2))
    assert policy.pacer.rate == pytest.approx(2.0)  # 4 requests (stage-0 rows) in 2 s


def test_explain_says_how_much_is_spent_and_what_is_left():
    pacing = EnergyPacing(battery_percent=3, window_s=3600, battery_wh=15)  # 1620 J an hour
    policy = _policy(PolicySpec(pacing=pacing))
    policy.decide(_at(0))
    policy.spend(600_000.0, 2100)  # 600 J on 2100 requests in the first 1000 s
    d = policy.decide(_at(1000))
    line = next(r for r in d.reasons if r.startswith("pacing:"))
    allowance = round_down(1_020_000 / (2.1 * 2600))  # 187 mJ
    assert line == (
        "pacing: 1.1 of 3% of the battery (600 of 1,620 J) spent this hour, 43 min left at "
        f"2.1 requests/s: at most {allowance:.3g} mJ per inference; predicted 20 mJ"
    )
    assert d.constraints["energy_mj"] == allowance
    charging = policy.decide(_at(1001, charging=True))
    assert "on the charger" in charging.explain() and charging.constraints["energy_mj"] is None


def test_round_down_never_loosens():
    assert round_down(3.456) == 3.45 and round_down(1019.9) == 1010 and round_down(0.0) == 0
    assert round_down(math.inf) == math.inf and round_down(2.3) == 2.3
