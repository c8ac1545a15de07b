"""The demo's last step: the exported bundle, run by the engine request by request, under a
battery-dependent policy on a SIMULATED device whose battery the requests drain."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ponder._core.report import format_table

# The simulated device: a phone-class CPU taken as SLOWDOWN x slower than the machine the cost
# table is measured on, drawing STAGE_W while a stage runs, with a battery small enough that a
# few thousand requests drain it from START_PERCENT (a demo, not a lifetime estimate).
SLOWDOWN = 20.0
STAGE_W = 3.0
BATTERY_J = 30.0
START_PERCENT = 60.0
STOP_PERCENT = 5.0
MAX_REQUESTS = 20_000


def policy_spec(full_ms: float) -> Any:
    """Above 50%: the best accuracy within the full model's latency; between 20% and 50%: at
    most half the full model's energy per inference; below 20%: at most a quarter."""
    from ponder.runtime import PolicyRule, PolicySpec

    return PolicySpec(
        default=PolicyRule("middle", latency_ms=full_ms, energy_fraction=0.5),
        rules=(
            PolicyRule("plenty of battery", battery_above=50, latency_ms=full_ms),
            PolicyRule("low battery", battery_below=20, charging=False, energy_fraction=0.25),
        ),
    )


def policy_drain(
    bundle: Path, x: np.ndarray, y: np.ndarray, echo: Callable[[str], None]
) -> dict[str, Any]:
    """Profile the bundle on ONNX Runtime, then serve the test images in a loop until the
    simulated battery is at STOP_PERCENT: real predictions and exits from the engine, time and
    energy from the simulated device, which the policy learns from."""
    from ponder.runtime import Battery, Engine, SimulatedDevice, cost_table_path
    from ponder.runtime._engine.profile import profile

    engine = Engine.load(bundle, "onnxruntime", costs=None)
    table = profile(engine, repeats=30)
    table.save(cost_table_path(bundle, "onnxruntime"))
    slow = [s.latency_ms * SLOWDOWN for s in table.stages]
    device = SimulatedDevice(
        slow, STAGE_W, idle_power_w=0.0, battery=Battery(BATTERY_J / 3600, START_PERCENT)
    )
    engine = Engine.load(bundle, "onnxruntime", costs=_slowed(table))
    policy = engine.policy(policy_spec(sum(slow)), power_w=STAGE_W)
    echo(
        f"      SIMULATED device: {SLOWDOWN:g}x slower than this machine's measured stages "
        f"({', '.join(f'{t:.2f}' for t in slow)} ms), {STAGE_W:g} W while running, a "
        f"{BATTERY_J:g} J battery starting at {START_PERCENT:g}%; requests are real inferences "
        f"of the bundle on the test images"
    )
    log = _drain(engine, policy, device, x, y)
    _echo_log(log, echo)
    return {
        "simulated": True,
        "slowdown": SLOWDOWN,
        "stage_w": STAGE_W,
        "battery_j": BATTERY_J,
        "bands": log,
    }


def _slowed(table: Any) -> Any:
    """The measured table as the simulated device would have measured it."""
    from dataclasses import replace

    stages = tuple(
        replace(s, latency_ms=s.latency_ms * SLOWDOWN, latency_p90_ms=s.latency_p90_ms * SLOWDOWN)
        for s in table.stages
    )
    return replace(table, stages=stages, simulated=True, device=f"simulated ({SLOWDOWN:g}x)")


def _drain(engine, policy, device, x, y) -> list[dict[str, Any]]:
    """Requests until the battery is at STOP_PERCENT; one row per (rule, point) run."""
    rows: list[dict[str, Any]] = []
    for i in range(MAX_REQUESTS):
        state = device.state()
        if state.battery_percent <= STOP_PERCENT:
            break
        decision = policy.decide(state)
        j = i % len(x)
        result = engine.run(x[j : j + 1], point=decision.point)
        energy = 0.0
        for k in result.stage_index:
            run = device.run_stage(k)
            policy.observe(k, run.latency_ms, run.energy_mj)
            energy += run.energy_mj
        if not rows or (rows[-1]["rule"], rows[-1]["point"]) != (
            decision.rule_name,
            decision.point.name,
        ):
            rows.append(
                {
                    "rule": decision.rule_name,
                    "point": decision.point.name,
                    "from_percent": state.battery_percent,
                    "requests": 0,
                    "correct": 0,
                    "stages": 0,
                    "energy_mj": 0.0,
                    "why": decision.reasons,
                }
            )
        row = rows[-1]
        row["requests"] += 1
        row["correct"] += int(result.prediction[0] == y[j])
        row["stages"] += len(result.stage_index)
        row["energy_mj"] += energy
        row["to_percent"] = device.state().battery_percent
    return rows


def _echo_log(rows: list[dict[str, Any]], echo) -> None:
    table = [
        [
            f"{r['from_percent']:.0f}% -> {r['to_percent']:.0f}%",
            r["rule"],
            r["point"],
            r["requests"],
            f"{r['correct'] / r['requests']:.2%}",
            f"{r['stages'] / r['requests']:.2f}",
            f"{r['energy_mj'] / r['requests']:.2f}",
        ]
        for r in rows
    ]
    echo(
        "      what the policy did as the SIMULATED battery drained (accuracy is measured on "
        "the test images):"
    )
    head = [
        "battery",
        "rule",
        "operating point",
        "requests",
        "accuracy",
        "stages run",
        "mJ/inference (sim.)",
    ]
    for line in format_table(head, table).splitlines():
        echo("      " + line)
    for r in rows:  # the policy's own words when it moved
        echo(f"      at {r['from_percent']:.0f}%: " + "; ".join(r["why"][:3]))
