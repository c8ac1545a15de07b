"""`simulate` on a synthetic three-stage bundle and cost table (no model): the baselines, the
policy's lifetime against accuracy, dead batteries, charging, throttling, labels, seeds."""

from __future__ import annotations

import json
import math

import pytest

from ponder import ConfigError
from ponder.runtime import Bundle, CostTable, SimulatedDevice, StageCost, Trace, TracePoint
from ponder.runtime._sim.simulate import Scenario, default_policy_spec, simulate, synthetic_day

# Three stages of 1 ms each; at 2 W a stage costs 2 mJ, so always-full is 6 mJ per inference.
TABLE = CostTable("onnxruntime", "test-cpu", 1, 1, tuple(StageCost(i, 1.0, 1.1) for i in range(3)))


def _row(name, max_stage, accuracy, drop, flops, exits):
    return {
        "name": name,
        "thresholds": [0.5, 0.5],
        "max_stage": max_stage,
        "moe_tau": None,
        "accuracy": accuracy,
        "accuracy_drop": drop,
        "flops_fraction": flops,
        "exit_fractions": exits,
    }


POINTS = [
    _row("early", 0, 0.80, 0.18, 0.57, [1.0, 0.0, 0.0]),
    _row("mid", None, 0.95, 0.03, 0.74, [0.5, 0.3, 0.2]),
    _row("best", None, 0.98, 0.0, 0.87, [0.2, 0.3, 0.5]),
]
# 100 requests/s at 6 mJ is 0.6 W: a 0.6 Wh battery runs always-full for one hour.
SCENARIO = Scenario(slowdown=1.0, power_w=2.0, idle_power_w=0.0, battery_wh=0.6, noise=0.05)


@pytest.fixture
def manifest(make_bundle, base_manifest):
    base_manifest["operating_points"] = POINTS
    return Bundle.open(make_bundle(base_manifest)).manifest


def _trace(*rows: tuple[float, float, bool] | tuple[float, float, bool, float]) -> Trace:
    return Trace(tuple(TracePoint(*row) for row in rows))


STEADY = _trace((0.0, 100.0, False), (2 * 3600.0, 0.0, False))  # two hours at 100 requests/s


def _summaries(result) -> dict[str, dict]:
    return {r.name: r.summary() for r in result.runs}


def test_earliest_spends_less_and_lives_longer_than_full(manifest):
    s = _summaries(simulate(manifest, TABLE, STEADY, SCENARIO))
    full, earliest = s["always full"], s["always earliest"]
    assert full["energy_per_inference_mj"] == pytest.approx(6.0, rel=0.01)
    assert earliest["energy_per_inference_mj"] == pytest.approx(2.0, rel=0.01)
    assert full["lifetime_h"] == pytest.approx(1.0, rel=0.01)
    assert earliest["survived"] and earliest["final_battery_percent"] > 0
    assert full["mean_expected_accuracy"] == pytest.approx(0.98)  # accuracy + accuracy_drop
    assert earliest["mean_expected_accuracy"] == pytest.approx(0.80)  # the max_stage-0 row


def test_policy_outlives_full_at_an_accuracy_between_the_baselines(manifest):
    result = simulate(manifest, TABLE, STEADY, SCENARIO)
    s, c = _summaries(result), result.comparison()
    policy, full, earliest = s["policy"], s["always full"], s["always earliest"]
    assert policy["lifetime_h"] > full["lifetime_h"]
    assert earliest["mean_expected_accuracy"] < policy["mean_expected_accuracy"]
    assert policy["mean_expected_accuracy"] <= full["mean_expected_accuracy"]
    assert c["lifetime_gained_h"] == pytest.approx(policy["lifetime_h"] - full["lifetime_h"])
    assert c["accuracy_cost_points"] >= 0 and policy["switches"] >= 2  # battery rules bite
    assert "lifetime gained vs always-full: +" in result.headline()


def test_a_dead_device_drops_every_request_until_recharged(manifest):
    run = simulate(manifest, TABLE, STEADY, SCENARIO).run("always full")
    s = run.summary()
    assert s["dropped_battery_empty"] == pytest.approx(100 * 3600, rel=0.02)  # the second hour
    assert s["served"] + s["dropped_battery_empty"] == pytest.approx(s["requests"])
    dead = [i for i, t in enumerate(run.series["time_h"]) if t > 1.05]
    assert all(run.series["served"][i] == 0 for i in dead)
    assert all(run.series["battery_percent"][i] == 0 for i in dead)
    assert all(math.isnan(run.series["energy_mj"][i]) for i in dead)


def test_charging_in_the_trace_refills_the_battery(manifest):
    trace = _trace((0.0, 100.0, False), (3600.0, 100.0, True), (2 * 3600.0, 0.0, False))
    run = simulate(manifest, TABLE, trace, SCENARIO).run("always full")
    battery, served = run.series["battery_percent"], run.series["served"]
    assert min(battery) == 0.0 and battery[-1] == 100.0  # 5 W charger, 0.6 W load
    assert served[-1] > 0  # back on while on the charger


def test_throttling_raises_latency(manifest):
    cool = _trace((0.0, 100.0, True, 20.0), (600.0, 0.0, True, 20.0))
    hot = _trace((0.0, 100.0, True, 80.0), (600.0, 0.0, True, 80.0))  # above throttle_start
    runs = [
        simulate(manifest, TABLE, t, SCENARIO).run("always full").summary() for t in (cool, hot)
    ]
    assert runs[0]["min_speed"] == 1.0 and runs[1]["min_speed"] < 1.0
    assert runs[1]["latency_p50_ms"] > runs[0]["latency_p50_ms"] * 1.1
    assert runs[1]["energy_per_inference_mj"] == pytest.approx(runs[0]["energy_per_inference_mj"])


def test_requests_beyond_the_device_s_capacity_are_dropped(manifest):
    flood = _trace((0.0, 2000.0, True), (60.0, 0.0, True))  # 2000/s × 3 ms = 6 s of work per s
    s = simulate(manifest, TABLE, flood, SCENARIO).run("always full").summary()
    assert s["served"] == pytest.approx(60 / 0.003 * math.exp(-(0.05**2) / 2), rel=0.01)
    assert s["dropped_busy"] == pytest.approx(s["requests"] - s["served"])


def test_everything_is_labelled_simulated_and_json_ready(manifest):
    result = simulate(manifest, TABLE, STEADY, SCENARIO)
    d = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert d["simulated"] is True and d["comparison"]["simulated"] is True
    assert "simulated" in d["headline"] and "calibration split" in d["headline"]
    assert [s["strategy"] for s in d["strategies"]] == ["policy", "always full", "always earliest"]
    assert any("0.6 Wh" in line for line in d["assumptions"])
    assert d["strategies"][0]["switch_log"][0]["reasons"]


def test_the_same_seed_gives_the_same_result(manifest):
    first, again = (simulate(manifest, TABLE, STEADY, SCENARIO, seed=3).to_dict() for _ in range(2))
    assert first == again


def test_default_policy_and_synthetic_day():
    spec = default_policy_spec(10.0, 0.98)
    assert [r.name for r in spec.rules] == ["on the charger", "plenty of battery", "low battery"]
    low = spec.rules[2]
    assert low.energy_fraction == 0.5 and low.battery_below == 20 and low.charging is False
    assert spec.default.min_accuracy == pytest.approx(0.97)
    day = synthetic_day()
    assert day.synthetic and day.points[0].time_s == 7 * 3600 and day.duration_s == 24 * 3600
    assert not day.points[0].charging


def test_bad_inputs_say_what_to_do(manifest):
    with pytest.raises(ConfigError, match="at least two rows"):
        simulate(manifest, TABLE, _trace((0.0, 1.0, False)), SCENARIO)
    two = CostTable("onnxruntime", "test-cpu", 1, 1, TABLE.stages[:2])
    with pytest.raises(ConfigError, match="ponder profile"):
        simulate(manifest, two, STEADY, SCENARIO)
    with pytest.raises(ConfigError, match="slowdown"):
        Scenario(slowdown=0)


def test_run_requests_matches_stage_by_stage_accounting():
    device = SimulatedDevice([1.0, 2.0], 2.0, idle_power_w=0.0)
    done = device.run_requests([1000, 500], 10.0)  # 1000 × 1 ms + 500 × 2 ms = 2 s of work
    assert done.busy_s == pytest.approx(2.0) and done.served_fraction == 1.0
    assert done.stage_energy_mj == pytest.approx((2.0, 4.0))
    assert device.time_s == pytest.approx(10.0)
    spent_j = 2.0 * 2.0  # 2 s at 2 W
    assert device.battery.percent == pytest.approx(100 - spent_j / (15.0 * 3600) * 100)


def test_no_lifetime_to_gain_when_always_full_survives(manifest):
    big = Scenario(slowdown=1.0, power_w=2.0, battery_wh=10.0)
    result = simulate(manifest, TABLE, STEADY, big)
    assert result.comparison()["lifetime_gained_h"] is None
    assert "always-full survived the trace too" in result.headline()
    assert result.run("always full").summary()["hours_without_battery"] == 0.0


def test_a_bundle_without_operating_points_says_how_to_get_them(make_bundle, base_manifest):
    base_manifest["operating_points"] = []
    manifest = Bundle.open(make_bundle(base_manifest)).manifest
    with pytest.raises(ConfigError, match=r"no operating points.*ponder export"):
        simulate(manifest, TABLE, STEADY, SCENARIO)
