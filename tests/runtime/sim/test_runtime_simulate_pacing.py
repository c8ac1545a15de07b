"""`simulate` with a policy that paces energy ([pacing]) on a synthetic day: every window stays
within its budget where the same policy without pacing goes over, and the report shows both."""

from __future__ import annotations

import json

import pytest
from test_runtime_simulate import POINTS, TABLE

from ponder.runtime import Bundle, PolicySpec
from ponder.runtime._policy.spec import EnergyPacing
from ponder.runtime._sim.simulate import Scenario, simulate, synthetic_day

# The synthetic day × 10 (7:00-23:00 unplugged): 20 requests/s in the morning, 4 by day, 15 at
# lunch, 30 in the evening, ±30% per 10 min. Three stages of 1 ms at 2 W: "best" costs 4.6 mJ,
# "mid" 3.4, "early" 2. 1% of a 10 Wh battery is 360 J an hour, 5 mJ a request at 20/s, so
# the morning affords "best" (~330 J); in the evening "best" needs ~500 J an hour, over the
# budget, while "early" at the busiest 10 minutes (39/s) still needs only ~280 J, so pacing
# can hold every window without dropping a request. Idle draw (0.1 W) is not paced.
SCENARIO = Scenario(slowdown=1.0, power_w=2.0, idle_power_w=0.1, battery_wh=10.0, load_scale=10)
PACED = PolicySpec(pacing=EnergyPacing(battery_percent=1, window_s=3600, battery_wh=10))


@pytest.fixture
def result(make_bundle, base_manifest):
    base_manifest["operating_points"] = POINTS
    manifest = Bundle.open(make_bundle(base_manifest)).manifest
    return simulate(manifest, TABLE, synthetic_day(), SCENARIO, policy_spec=PACED)


def _largest_step_j(run) -> float:
    s = run.series
    return max(e * n / 1000 for e, n in zip(s["energy_mj"], s["served"], strict=True) if n)


def test_every_window_stays_within_budget_where_the_unpaced_policy_does_not(result):
    pacing = result.pacing()
    budget = pacing["budget_j"]
    assert budget == pytest.approx(360)
    paced = [w["strategies"]["policy"] for w in pacing["windows"]]
    unpaced = [w["strategies"]["policy without pacing"] for w in pacing["windows"]]
    assert len(paced) == 24
    # the policy decides once per 60 s step, so a window may end up to part of a step over
    slack = _largest_step_j(result.run("policy"))
    assert slack < 0.03 * budget
    assert all(w["spent_j"] <= budget + slack for w in paced), [w["spent_j"] for w in paced]
    assert sum(w["spent_j"] > budget for w in unpaced) >= 3  # the evening burst
    assert max(w["spent_j"] for w in unpaced) > 1.3 * budget
    # the price: accuracy in the windows pacing held back; never a dropped request
    evening = [k for k, w in enumerate(unpaced) if w["spent_j"] > budget]
    for k in evening:
        assert paced[k]["mean_expected_accuracy"] < unpaced[k]["mean_expected_accuracy"]
        assert paced[k]["battery_drain_percent"] < unpaced[k]["battery_drain_percent"]
    s = {r.name: r.summary() for r in result.runs}
    assert s["policy"]["served"] == pytest.approx(s["policy without pacing"]["served"])
    acc = [s[n]["mean_expected_accuracy"] for n in ("always earliest", "policy", "always full")]
    assert acc == sorted(acc)


def test_windows_on_the_charger_count_nothing(result):
    windows = result.pacing()["windows"]
    night = windows[16:]  # 23:00-07:00 on the charger
    assert all(w["strategies"]["policy"]["spent_j"] == 0 for w in night)
    assert night[0]["strategies"]["policy"]["battery_drain_percent"] < 0  # charging


def test_the_report_is_labelled_and_json_ready(result):
    d = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    names = [s["strategy"] for s in d["strategies"]]
    assert names == ["policy", "policy without pacing", "always full", "always earliest"]
    assert d["policy"]["pacing"] == {"battery_percent": 1, "window_s": 3600, "battery_wh": 10}
    totals = d["pacing"]["totals"]
    assert totals["policy without pacing"]["windows_over_budget"] >= 3
    assert totals["policy"]["peak_window_j"] < totals["policy without pacing"]["peak_window_j"]
    assert any(line.startswith("pacing: at most 1% of a 10 Wh") for line in d["assumptions"])
    switch = d["strategies"][0]["switch_log"][1]
    assert any(r.startswith("pacing: ") for r in switch["reasons"])
