"""Parity of the Java core's policy and exit rules with ponder.runtime: Python writes decision
traces (recorded device states, stage times and the decisions its Policy made) and exit traces
(stage outputs of a real bundle run by ONNX Runtime, the rules' scores, where the Python Engine let
each sample leave); the Java tests replay them and must decide the same, step by step."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from java_core import run_java_tests

from ponder import OperatingPoint
from ponder._core.rules import exit_rule
from ponder.runtime import (
    Bundle,
    CostModel,
    CostTable,
    DeviceState,
    Engine,
    LinkEstimate,
    OffloadPoint,
    OffloadPolicy,
    Policy,
    PolicySpec,
    StageCost,
)

STAGES = 4


def _num(x: float | None) -> float | None:
    """JSON has no infinities or NaN: they travel as null (the Java side reads them back)."""
    return None if x is None or not math.isfinite(x) else x


def _points() -> list[OperatingPoint]:
    """Points of a 4-stage model: exit shares, accuracy and a cut-off stage, as calibration
    writes them; two share an accuracy (the cheaper wins) and one has none."""
    rows = [
        ("earliest", (0.5, 0.5, 0.5), 0, 0.71, (1.0, 0.0, 0.0, 0.0)),
        ("eager", (0.6, 0.7, 0.8), None, 0.83, (0.55, 0.25, 0.12, 0.08)),
        ("balanced", (0.8, 0.85, 0.9), None, 0.9, (0.3, 0.3, 0.2, 0.2)),
        ("balanced-b", (0.82, 0.84, 0.9), None, 0.9, (0.28, 0.34, 0.18, 0.2)),
        ("balanced+", (0.88, 0.88, 0.92), None, 0.904, (0.2, 0.3, 0.25, 0.25)),
        ("careful", (0.95, 0.95, 0.95), None, 0.935, (0.1, 0.2, 0.3, 0.4)),
        ("two stages", (0.7, math.inf, math.inf), 1, 0.8, (0.6, 0.4, 0.0, 0.0)),
        ("full", (math.inf,) * 3, None, 0.94, ()),
        ("unmeasured", (0.9, 0.9, 0.9), None, None, (0.25, 0.25, 0.25, 0.25)),
    ]
    return [
        OperatingPoint(n, t, max_stage=m, accuracy=a, exit_fractions=f, flops_fraction=None)
        for n, t, m, a, f in rows
    ]


def _table(energy: bool) -> CostTable:
    ms = [2.0, 3.5, 5.0, 7.5]
    stages = tuple(
        StageCost(k, t * 4, t * 4 * 1.3, (t * 4 * 1.8) if energy else None)
        for k, t in enumerate(ms)
    )
    return CostTable("executorch", "simulated phone", 4, None, stages,
                     energy_source="simulated" if energy else None, simulated=True)  # fmt: skip


# hysteresis at work: A and B differ by less than the accuracy margin (B is too slow when the
# clock is throttled), E saves less than the cost margin over B under the floor
MARGIN_POINTS = [
    OperatingPoint(
        "A",
        (0.5, math.inf, math.inf),
        max_stage=1,
        accuracy=0.9005,
        exit_fractions=(0.6, 0.4, 0.0, 0.0),
    ),
    OperatingPoint("B", (math.inf,) * 3, accuracy=0.905),
    OperatingPoint("E", (0.9, 0.9, 0.9), accuracy=0.902, exit_fractions=(0.02, 0.02, 0.04, 0.92)),
]

SPECS = {
    "rules": {
        "latency_quantile": 0.95,
        "hysteresis": {
            "battery_band": 3,
            "temperature_band": 2,
            "accuracy_margin": 0.006,
            "cost_margin": 0.08,
            "min_requests": 3,
        },
        "default": {"latency_ms": 22},
        "rule": [
            {"name": "hot", "when": {"temperature_above": 44}, "latency_ms": 12},
            {
                "name": "low battery",
                "when": {"battery_below": 20, "charging": False},
                "energy_fraction": 0.45,
            },
            {
                "name": "saver",
                "when": {"battery_below": 45, "charging": False},
                "min_accuracy": 0.82,
                "latency_ms": 30,
            },
            {"name": "plenty", "when": {"battery_above": 70}, "latency_ms": 40},
            {
                "name": "tight",
                "when": {"battery_above": 45, "battery_below": 55},
                "latency_ms": 3,
                "energy_mj": 2,
            },
        ],
    },
    "learned": {"default": {"latency_ms": 7.5}, "hysteresis": {"min_requests": 2}},
    "margins": {
        "hysteresis": {"accuracy_margin": 0.006, "cost_margin": 0.08},
        "default": {"latency_ms": 32},
        "rule": [{"name": "saver", "when": {"battery_below": 50}, "min_accuracy": 0.901}],
    },
    "paced": {
        "pacing": {"battery_percent": 0.002, "window_s": 120, "battery_wh": 15},
        "default": {"latency_ms": 35},
        "rule": [
            {"name": "warm", "when": {"temperature_above": 40}, "latency_ms": 30},
            {
                "name": "floor when cool",
                "when": {"temperature_above": 10, "battery_below": 60},
                "min_accuracy": 0.85,
            },
        ],
    },
}


def _trace(name: str, seed: int, steps: int) -> dict:
    """One scenario: the Python Policy decides through a random walk of device states while
    it observes noisy stage times (spikes, throttling, energy now and then)."""
    rng = random.Random(seed)
    spec = PolicySpec.from_dict(SPECS[name])
    table = None if name == "learned" else _table(energy=name != "learned")
    flops = [1e6, 2e6, 2.5e6, 4e6]
    power = 2.0 if name == "learned" else None
    points = MARGIN_POINTS if name == "margins" else _points()
    policy = Policy(points, CostModel(STAGES, table, stage_flops=flops, power_w=power), spec)
    battery, charging, temp, t, previous = 100.0, False, 30.0, 0.0, None
    events = []
    for step in range(steps):
        # a day in phases: discharge to a few percent, charge, discharge; hot spells
        charging = 220 <= step < 300
        battery += 0.8 if charging else -0.42 * rng.uniform(0.5, 1.5)
        battery = min(100.0, max(1.0, battery))
        temp = 30 + 17 * math.sin(step / 45) + rng.uniform(-1.5, 1.5)
        speed = 1.0 if temp < 44 else rng.choice([0.5, 0.75])
        if name == "margins":  # battery around the rule's edge, throttled spells
            battery = 50 + 20 * math.sin(step / 25) + rng.uniform(-1, 1)
            speed = 0.6 if math.sin(step / 7) > 0.5 else 1.0
        t += rng.uniform(0.05, 4.0)
        known = rng.random() > 0.05  # now and then a probe says nothing
        state = DeviceState(
            battery_percent=round(battery, 2) if known else None,
            charging=charging if known else None,
            temperature_c=round(temp, 1) if known else None,
            speed=speed,
            time_s=round(t, 3),
        )
        if previous is not None and rng.random() < 0.15:
            state = previous  # a repeated state: the cached decision must match as well
        previous = state
        d = policy.decide(state)
        events.append({"decide": _state(state), "expect": _decision(d, points)})
        last = d.point.last_stage(STAGES)
        seen = [k for k in range(last + 1) if name != "learned" or step > 5 or k < 2]
        for k in seen:
            base = table.stages[k].latency_ms / 4 if table else 1.0 + 0.8 * k
            ms = base * rng.lognormvariate(0.0, 0.25) / speed
            if rng.random() < 0.02:
                ms *= 10  # a spike
            mj = ms * 1.7 if rng.random() < 0.3 else None
            batch = rng.choice([1, 1, 1, 2, 3])
            ms *= batch
            mj = None if mj is None else mj * batch
            policy.observe(k, ms, mj, batch=batch)
            events.append({"observe": [k, ms, mj, batch]})
        if rng.random() < 0.2:
            over, step_ms = rng.uniform(0, 0.4), rng.choice([None, rng.uniform(0, 0.1)])
            policy.observe_request(over, step_ms)
            events.append({"request": [over, step_ms]})
    return {
        "name": name,
        "num_stages": STAGES,
        "points": [p.to_dict() for p in points],
        "table": None if table is None else table.to_dict(),
        "stage_flops": flops,
        "power_w": power,
        "alpha": 0.2,
        "tail": 2.0,
        "spec": spec.to_dict(),
        "events": events,
    }


def _state(s: DeviceState) -> dict:
    return {"battery_percent": s.battery_percent, "charging": s.charging,
            "temperature_c": s.temperature_c, "speed": s.speed, "time_s": s.time_s}  # fmt: skip


def _decision(d, points) -> dict:
    p = d.prediction
    return {
        "index": points.index(d.point),
        "point": d.point.name,
        "rule": d.rule_name,
        "feasible": d.feasible,
        "changed": d.changed,
        "how": d.why.how,
        "kept": d.why.kept,
        "best": d.why.best,
        "limits": [_num(x) for x in d.why.limits],
        "prediction": {
            "mean_latency_ms": _num(p.mean_latency_ms),
            "worst_latency_ms": _num(p.worst_latency_ms),
            "mean_energy_mj": p.mean_energy_mj,
            "flops_fraction": p.flops_fraction,
        },
    }


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("policy-traces")
    for i, name in enumerate(SPECS):
        trace = _trace(name, seed=i, steps=500)
        (out / f"{name}.json").write_text(json.dumps(trace, allow_nan=False))
    offload = _offload_trace(seed=7, steps=400)
    (out / "offload.trace").write_text(json.dumps(offload, allow_nan=False))
    return out


def test_the_traces_cover_every_kind_of_decision(traces):
    """A replay proves little if the traces never switch, keep, cap or learn: check they do."""
    decisions = [
        e["expect"]
        for f in sorted(traces.glob("*.json"))
        for e in json.loads(f.read_text())["events"]
        if "decide" in e
    ]
    assert {d["how"] for d in decisions} == {"accuracy", "cost", "floor", "cheapest", "unknown"}
    assert {d["kept"] for d in decisions} == {None, "margin", "dwell"}
    assert {d["rule"] for d in decisions} >= {"hot", "low battery", "saver", "plenty", "tight",
                                              "default", "warm", "floor when cool"}  # fmt: skip
    assert sum(d["changed"] for d in decisions) > 30
    assert len({d["point"] for d in decisions}) >= 6
    assert any(not d["feasible"] for d in decisions)
    paced = json.loads((traces / "paced.json").read_text())["events"]
    caps = {e["expect"]["limits"][1] for e in paced if "decide" in e}
    assert len(caps) > 20  # the pacing allowance moves the energy limit


def _offload_trace(seed: int, steps: int) -> dict:
    """The Python OffloadPolicy over a local policy and three offload points, on a link it
    learns from transfers (a change of network halfway), with failures and back-off on a
    recorded clock: every choice (local or which point, probes) is recorded."""
    rng = random.Random(seed)
    now = [0.0]
    spec = PolicySpec.from_dict({
        "hysteresis": {"accuracy_margin": 0.005, "cost_margin": 0.1},
        "default": {"latency_ms": 30},
        "rule": [
            {"name": "saver", "when": {"battery_below": 40}, "min_accuracy": 0.9},
            {"name": "hot", "when": {"temperature_above": 45}, "latency_ms": 10},
        ],
    })  # fmt: skip
    table, points = _table(energy=True), _points()
    local = Policy(points, CostModel(STAGES, table, stage_flops=[1.0] * STAGES), spec)
    cloud = [
        OffloadPoint(1.0, "int8", 0.95, 7400.0),
        OffloadPoint(0.5, "int8", 0.93, 3700.0),
        OffloadPoint(0.25, "int4-g32", 0.905, 1500.0),
    ]
    policy = OffloadPolicy(local, cloud, LinkEstimate(), power_w=2.5, radio_power_w=0.6,
                           probe_every=25, backoff_s=1.0, max_backoff_s=8.0,
                           clock=lambda: now[0])  # fmt: skip
    rtt, bw = 0.004, 2.5e6
    events = []
    for step in range(steps):
        now[0] += rng.uniform(0.05, 1.5)
        if step == steps // 2:
            rtt, bw = 0.040, 1.5e5  # another network
        battery = 70 + 35 * math.sin(step / 40)
        temp = 35 + 15 * math.sin(step / 23)
        state = DeviceState(battery_percent=round(battery, 2), charging=False,
                            temperature_c=round(temp, 1), speed=1.0 if temp < 45 else 0.7,
                            time_s=round(now[0], 3))  # fmt: skip
        d = policy.decide(state)
        events.append({"clock": now[0], "decide": _state(state),
                       "expect": {"offload": d.offload, "point": d.point.name,
                                  "probe": d.probe}})  # fmt: skip
        if d.offload:
            edge_ms = rng.uniform(0.8, 1.6) / state.speed
            policy.observe_edge(edge_ms, 1)
            events.append({"edge": [edge_ms, 1]})
            if rng.random() < 0.08:
                policy.failed("refused: connection refused")
                events.append({"failed": "refused: connection refused"})
                continue
            sent = d.point.payload_bytes + 300
            seconds = rtt + sent / bw * rng.lognormvariate(0, 0.2)
            policy.link.add(seconds, int(sent))
            server = rng.uniform(1, 3)
            policy.observe_offload(server, 260, 1, seconds + server / 1e3)
            events.append({"link": [seconds, int(sent)],
                           "offloaded": [server, 260, 1, seconds + server / 1e3]})  # fmt: skip
        else:
            for k in range(d.local.point.last_stage(STAGES) + 1):
                ms = table.stages[k].latency_ms / 4 * rng.lognormvariate(0, 0.2) / state.speed
                local.observe(k, ms)
                events.append({"observe": [k, ms, None, 1]})
    return {"points": [p.to_dict() for p in points], "table": table.to_dict(),
            "spec": spec.to_dict(), "cloud": [c.to_dict() for c in cloud], "events": events}  # fmt: skip


def test_the_offload_trace_covers_every_choice():
    events = _offload_trace(seed=7, steps=400)["events"]
    chosen = [e["expect"] for e in events if "expect" in e]
    names = {c["point"] for c in chosen if c["offload"] and not c["probe"]}
    assert len(names) >= 2 and any(c["probe"] for c in chosen)
    assert sum(c["offload"] for c in chosen) > 40 and sum(not c["offload"] for c in chosen) > 40
    assert sum("failed" in e for e in events) >= 3


def _exit_trace(bundle: Path, out: Path) -> Path:
    """Stage outputs of 240 samples through a real bundle on ONNX Runtime, the scores every rule
    gives them, and where the Python Engine let each sample leave at five operating points."""
    import torch
    from tiny_models import inputs

    x = inputs("conv2d", batch=240, seed=3).numpy()
    m = Bundle.open(bundle).manifest
    engine = Engine.load(bundle, "onnxruntime", costs=None)
    known = {m.inputs[0].name: x}
    values = []  # per stage: what a StageRunner returns ([N, C])
    for k, stage in enumerate(m.stages):
        got = engine.backend.run_stage(k, {t.name: known[t.name] for t in stage.inputs})
        known.update({n: engine.backend.to_numpy(v) for n, v in got.items()})
        exit_out = next((t.name for t in stage.outputs if t.name.startswith("exit_logp_")), None)
        values.append(known[exit_out or stage.outputs[0].name].astype(np.float32))
    scores = {}
    for name in ("max_prob", "entropy", "margin", "patience", "ztw"):
        rule = exit_rule(name, ensembled=False)
        state, per_stage = rule.start(len(x)), []
        for k in range(len(m.stages) - 1):
            s, _ = rule.step(values[k], state)
            per_stage.append(np.asarray(s, np.float64).tolist())
        scores[name] = per_stage
    bundle_rule = exit_rule(m.exit_rule.name, ensembled=m.exit_rule.ensembled)
    state = bundle_rule.start(len(x))
    own = np.stack([bundle_rule.step(values[k], state)[0] for k in range(len(m.stages) - 1)])
    exits = len(m.stages) - 1
    points = [
        OperatingPoint("q30", tuple(np.quantile(own[k], 0.3) for k in range(exits))),
        OperatingPoint("q70", tuple(np.quantile(own[k], 0.7) for k in range(exits))),
        OperatingPoint("first only", (float(np.median(own[0])),) + (math.inf,) * (exits - 1)),
        OperatingPoint("cut", tuple(np.quantile(own[k], 0.9) for k in range(exits)), max_stage=1),
        OperatingPoint.full(exits),
    ]
    runs = []
    with torch.no_grad():
        for p in points:
            r = engine.run(x, point=p)
            runs.append({"point": p.to_dict(), "exit_stage": r.exit_stage.tolist(),
                         "prediction": r.prediction.tolist()})  # fmt: skip
    path = out / "exits.json"
    trace = {"bundle": str(bundle), "values": [v.tolist() for v in values], "scores": scores,
             "runs": runs}  # fmt: skip
    path.write_text(json.dumps(trace, allow_nan=False))
    return path


@pytest.mark.slow
def test_java_policy_and_exit_rules_decide_as_python(traces, ztw_bundle, tmp_path):
    exits = _exit_trace(ztw_bundle, tmp_path)
    env = {
        "PONDER_TEST_POLICY_TRACES": str(traces),
        "PONDER_TEST_EXIT_TRACE": str(exits),
        "PONDER_JAVA_BUILD": str(tmp_path / "java"),
    }
    out = run_java_tests(["--select-package", "dev.ponder.core.policy",
                          "--select-package", "dev.ponder.core.engine"], env, expected=5)  # fmt: skip
    said = [line for line in out.splitlines() if "replayed" in line or "Python" in line
            or "samples per exit" in line]  # fmt: skip
    print("\n".join(said))
    assert any("2000 decisions replayed" in line for line in said), out
    assert any("400 offload choices replayed" in line for line in said), out
