"""OffloadPolicy on synthetic points, a hand-set link and a fake clock (no model, no network):
when it offloads and when it stays local, under latency, energy and accuracy-floor budgets,
probing an unmeasured or unused link, backing off after failures, and what explain() says."""

from __future__ import annotations

import json

import pytest
from test_runtime_policy import _policy

from ponder import ConfigError
from ponder.runtime import (
    DeviceState,
    LinkEstimate,
    OffloadPoint,
    OffloadPolicy,
    PolicyRule,
    PolicySpec,
)

# local (from test_runtime_policy, 1 W, tail 0): early 0.80 (worst 2 ms), mid 0.90 (10),
# deep 0.94 (16), most 0.97 (20, mean 10.8 mJ), full 0.98 (20)
CLOUD = [
    OffloadPoint(1.0, "int8", 0.985, 3000),
    OffloadPoint(0.5, "int8", 0.975, 1500),
    OffloadPoint(0.25, "int4-g32", 0.95, 600),
]
FAST, SLOW = 10e6 / 8, 1e6 / 8  # 10 and 1 Mbit/s in bytes per second


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _offloader(spec, bandwidth=FAST, rtt_s=0.005, **kw):
    """A policy whose device half takes 2 ms, server 1 ms, answers 300 B, link as given."""
    link = LinkEstimate(rtt_s=rtt_s, bandwidth_bps=bandwidth, samples=5)
    clock = Clock()
    policy = OffloadPolicy(_policy(spec), CLOUD, link, clock=clock, **kw)
    policy.observe_edge(2.0)
    policy.observe_offload(server_ms=1.0, answer_bytes=300, rows=1)
    return policy, clock


def test_offloads_when_the_cloud_is_more_accurate_within_the_latency_budget():
    policy, _ = _offloader(PolicySpec.simple(latency_ms=12))
    d = policy.decide()
    # keep 1: 2 ms device + 5 ms RTT + 3300 B at 10 Mbit/s (2.64 ms) + 1 ms server
    assert d.offload and not d.probe and d.point == CLOUD[0]
    best = next(c for c in d.cloud if c.point == CLOUD[0])
    assert best.latency_ms == pytest.approx(10.64) and best.breaks is None
    assert d.local.point.name == "mid"  # what the device alone would have run
    text = d.explain()
    assert "offloaded: cloud keep 1 int8" in text and "local 'mid' expects accuracy 0.900" in text
    assert "link: RTT 5 ms, 10 Mbit/s" in text
    json.dumps(d.to_dict())


def test_stays_local_when_the_link_is_too_slow_for_the_budget():
    policy, _ = _offloader(PolicySpec.simple(latency_ms=12), bandwidth=SLOW)
    d = policy.decide()
    assert not d.offload and d.point.name == "mid"
    # the smallest payload: 2 + 5 + 900 B at 1 Mbit/s (7.2 ms) + 1 = 15.2 ms > 12
    assert all(c.breaks for c in d.cloud)
    assert "no offload point is within the budgets" in d.explain()
    assert "15.2 ms > 12 ms" in d.explain()


def test_a_gain_within_the_accuracy_margin_does_not_offload():
    # budget 40 ms: local 'full' (0.98, 20 ms); keep 1 fits (34.4 ms) at 0.985, +0.005
    policy, _ = _offloader(PolicySpec.simple(latency_ms=40), bandwidth=SLOW)
    d = policy.decide()
    assert not d.offload and d.point.name == "full"
    assert "gains +0.0050 accuracy, not more than accuracy_margin 0.005" in d.explain()
    looser = PolicySpec(default=PolicyRule(latency_ms=40), accuracy_margin=0.001)
    policy, _ = _offloader(looser, bandwidth=SLOW)
    assert policy.decide().point == CLOUD[0]


def test_under_an_accuracy_floor_the_cheaper_in_energy_wins():
    spec = PolicySpec(default=PolicyRule(min_accuracy=0.95))
    policy, _ = _offloader(spec)
    d = policy.decide()
    # local: the cheapest above 0.95 is 'most' at 10.8 mJ; keep 0.25 (0.95): 2 mJ device +
    # 1 W radio × (5 + 0.72 + 1) ms = 8.72 mJ
    assert d.offload and d.point == CLOUD[2]
    energy = next(c.energy_mj for c in d.cloud if c.point == CLOUD[2])
    assert energy == pytest.approx(8.72)
    assert "cheaper than local 'most' at 10.8 mJ" in d.explain()
    # a radio that draws 3 W makes the same offload cost 2 + 3 × 6.72 = 22.2 mJ: stay local
    policy, _ = _offloader(spec, radio_power_w=3.0)
    assert policy.decide().point.name == "most"


def test_throttling_slows_the_device_half_not_the_link():
    policy, _ = _offloader(PolicySpec.simple(latency_ms=12))
    d = policy.decide(DeviceState(speed=0.5))
    best = next(c for c in d.cloud if c.point == CLOUD[0])
    assert best.edge_ms == pytest.approx(4.0) and best.link_ms == pytest.approx(7.64)


def test_an_unmeasured_link_is_probed_with_the_smallest_payload():
    policy = OffloadPolicy(_policy(PolicySpec.simple(latency_ms=12)), CLOUD, clock=Clock())
    d = policy.decide()
    assert d.offload and d.probe and d.point == CLOUD[2] and d.cloud == ()
    assert "probe: the link has not been measured yet" in d.explain()


def test_an_unused_link_is_probed_again_after_probe_every_requests():
    policy, _ = _offloader(PolicySpec.simple(latency_ms=12), bandwidth=SLOW, probe_every=3)
    decisions = [policy.decide() for _ in range(5)]
    assert [d.probe for d in decisions] == [False, False, False, True, False]
    assert "not been used for 3 requests" in decisions[3].explain()


def test_a_failure_backs_off_doubling_then_tries_again():
    policy, clock = _offloader(PolicySpec.simple(latency_ms=12))
    assert policy.decide().offload
    policy.failed("refused: cannot reach 127.0.0.1:9")
    d = policy.decide()
    assert not d.offload and d.point.name == "mid"
    assert "the last offload failed (refused: cannot reach 127.0.0.1:9)" in d.explain()
    clock.now += 1.01  # the first wait is backoff_s = 1 s
    assert policy.decide().offload
    policy.failed("timeout: no answer")
    clock.now += 1.01  # the second failure in a row waits 2 s
    assert not policy.decide().offload
    clock.now += 1.0
    assert policy.decide().offload
    policy.observe_offload(server_ms=1.0, answer_bytes=300, rows=1)  # success: reset
    policy.failed("server: 503")
    clock.now += 1.01
    assert policy.decide().offload


def test_needs_offload_points():
    with pytest.raises(ConfigError, match="needs offload points"):
        OffloadPolicy(_policy(), [])
    with pytest.raises(ConfigError, match="malformed"):
        OffloadPoint.from_dict({"keep": 1.0})


def test_an_untimed_local_model_is_timed_before_it_is_weighed():
    from test_runtime_policy import POINTS

    from ponder.runtime import CostModel, Policy

    local = Policy(POINTS, CostModel(4, stage_flops=[1, 4, 3, 2]), PolicySpec.simple(latency_ms=12))
    policy = OffloadPolicy(local, CLOUD, clock=Clock())
    d = policy.decide()
    assert not d.offload and "the local model's stage times are not measured yet" in d.explain()
    for stage, ms in enumerate((2.0, 8.0, 6.0, 4.0)):
        local.observe(stage, ms)
    assert policy.decide().probe  # then the link


def test_an_offloads_device_and_radio_energy_counts_against_the_pacing_window():
    from ponder.runtime import EnergyPacing

    spec = PolicySpec(default=PolicyRule(latency_ms=12), pacing=EnergyPacing(1, battery_wh=1))
    policy, _ = _offloader(spec)  # observed: a 2 ms device half at 1 W, a 0 s offload
    pacer = policy.local.pacer
    assert pacer.spent_mj == pytest.approx(2.0)
    policy.observe_edge(3.0)  # 3 mJ on the device
    policy.observe_offload(server_ms=1.0, answer_bytes=300, rows=1, seconds=0.008)  # 8 mJ radio
    assert pacer.spent_mj == pytest.approx(13.0)


def test_a_probe_does_not_make_the_policy_keep_offloading():
    # the cloud's best is exactly as accurate as local 'full': local stays, probe or not
    points = [OffloadPoint(1.0, "int8", 0.98, 600)]
    policy = OffloadPolicy(_policy(PolicySpec.simple(latency_ms=40)), points, clock=Clock())
    assert policy.decide().probe  # the link is unknown
    policy.link.add(0.005, 100)
    policy.observe_edge(2.0)
    d = policy.decide()
    assert not d.offload and d.point.name == "full"
