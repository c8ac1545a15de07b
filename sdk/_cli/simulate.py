"""`ponder simulate`: replay a day of battery and load on a SIMULATED device under a policy and
the two static baselines; writes simulate.json and simulate.png (where matplotlib is installed)
and prints a table."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

import ponder
from ponder._cli.runtime import BACKENDS
from ponder._cli.simulate_pacing import pacing_report, pacing_words

SYNTHETIC_LOAD_SCALE = 10.0  # synthetic day × 10: an always-on camera, ~4-40 frames/s awake
SHOWN_SWITCHES = 6


def run_simulate(
    bundle: str | Path,
    *,
    trace: str | Path | None = None,
    policy: str | Path | None = None,
    backend: str = "onnxruntime",
    costs: str | Path | None = None,
    scenario: Any = None,
    out: str | Path | None = None,
    seed: int = 0,
    echo: Callable[[str], None] = print,
) -> Any:
    """Load the bundle, its cost table, the trace (default: the synthetic day with its load
    × SYNTHETIC_LOAD_SCALE) and the policy; simulate; write JSON + PNG (the PNG only where
    matplotlib is installed); print the results."""
    from ponder._core.report import write_json
    from ponder.runtime import Bundle, CostTable, Trace, load_policy
    from ponder.runtime._sim.simulate import Scenario, simulate, synthetic_day

    opened = Bundle.open(bundle)
    table_path = cost_table_file(bundle, backend, costs)
    if scenario is None:
        scenario = Scenario(load_scale=1.0 if trace else SYNTHETIC_LOAD_SCALE)
    replay = Trace.load(trace) if trace else synthetic_day(seed=seed)
    spec = load_policy(policy) if policy else None
    result = simulate(
        opened.manifest, CostTable.load(table_path), replay, scenario, policy_spec=spec, seed=seed
    )
    out = Path(out) if out else Path(bundle).resolve().parent / "simulate"
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_json(
        out / "simulate.json",
        {
            **result.to_dict(),
            "bundle": str(bundle),
            "cost_table": str(table_path),
            "policy_file": policy and str(policy),
        },
    )
    xlabel = "hours since 07:00 (synthetic day)" if not trace else "hours since the trace start"
    png = _plot(out / "simulate.png", result, xlabel, echo)
    report(result, policy_name=str(policy) if policy else "the default policy", echo=echo)
    echo(f"wrote {json_path}" + (f" and {png}" if png else ""))
    return result


def _plot(path: Path, result: Any, xlabel: str, echo: Callable[[str], None]) -> Path | None:
    """The PNG, or None and one line saying what to install: a device needs no matplotlib to
    simulate (an older PNG in the folder is removed, so it cannot pass for this run's)."""
    if importlib.util.find_spec("matplotlib") is None:
        path.unlink(missing_ok=True)
        echo(
            f"{path.name} not drawn: matplotlib is not installed (pip install matplotlib); "
            f"{path.with_suffix('.json').name} holds every figure"
        )
        return None
    from ponder._cli.simulate_plot import plot_simulation

    return plot_simulation(path, result, xlabel=xlabel)


def cost_table_file(bundle: str | Path, backend: str, costs: str | Path | None) -> Path:
    """`costs`, else the table `ponder profile` stores beside the bundle; it must exist."""
    from ponder.runtime import cost_table_path

    path = Path(costs) if costs else cost_table_path(bundle, backend)
    if not path.is_file():
        raise ponder.BundleError(
            f"no cost table at {path}: measure one on this machine with "
            f"`ponder profile {bundle} --backend {backend}`, or pass --costs FILE"
        )
    return path


def report(result: Any, policy_name: str, echo: Callable[[str], None]) -> None:
    """The assumptions, the summary table, the policy's switches and the headline."""
    from ponder._core.report import format_table

    echo(f"SIMULATED replay ({result.trace}); nothing below is measured. Assumptions:")
    for line in [*result.scenario.describe(), *result.notes]:
        echo(f"  - {line}")
    echo(f"policy ({policy_name}; the first rule that holds decides):")
    for rule in (*result.policy.rules, result.policy.default):
        echo(f"  {_rule_words(rule)}")
    if result.policy.pacing is not None:
        echo(f"  [pacing] under every rule: {pacing_words(result.policy.pacing)}")
    echo("")
    echo(
        f"simulated over {result.duration_h:.1f} h (accuracy: expected, from the calibration split)"
    )
    echo(format_table(*summary_rows(result)))
    peak = max(r.summary()["peak_temperature_c"] for r in result.runs)
    slowest = min(r.summary()["min_speed"] for r in result.runs)
    echo(f"thermal (simulated): peak {peak:.1f} °C, lowest clock speed {slowest:.2f}")
    pacing_report(result, echo)
    switches(result.run("policy"), echo)
    echo(result.headline())


def _rule_words(rule: Any) -> str:
    d = rule.to_dict()
    when = d.pop("when", None)
    name = d.pop("name")
    budgets = ", ".join(f"{k} {v:.4g}" for k, v in d.items())
    when = ", ".join(f"{k} {str(v).lower()}" for k, v in when.items()) if when else "otherwise"
    return f"[{name}] when {when}: {budgets or 'no budgets'}"


def summary_rows(result: Any) -> tuple[list[str], list[list]]:
    head = [
        "strategy (simulated)",
        "lifetime h",
        "mean exp. accuracy",
        "energy/inf mJ",
        "p50 ms",
        "p95 ms",
        "served",
        "dropped",
    ]
    rows = []
    for run in result.runs:
        s = run.summary()
        life = (
            f"survived (lowest {s['min_battery_percent']:.0f}%)"
            if s["survived"]
            else f"{s['lifetime_h']:.2f}"
        )
        acc = (
            "unknown"
            if s["mean_expected_accuracy"] is None
            else f"{s['mean_expected_accuracy']:.4f}"
        )
        energy = (
            "-" if s["energy_per_inference_mj"] is None else f"{s['energy_per_inference_mj']:.3f}"
        )
        dropped = s["dropped_battery_empty"] + s["dropped_busy"]
        rows.append(
            [
                run.name,
                life,
                acc,
                energy,
                f"{s['latency_p50_ms']:.3f}",
                f"{s['latency_p95_ms']:.3f}",
                f"{s['served']:,.0f}",
                f"{dropped:,.0f}",
            ]
        )
    return head, rows


def switches(run: Any, echo: Callable[[str], None]) -> None:
    """The first few switches of the policy, with the first lines of their explanation."""
    echo(
        f"policy switches (simulated): {run.switch_count}"
        + (f", first {SHOWN_SWITCHES}:" if run.switch_count > SHOWN_SWITCHES else ":")
    )
    for s in run.switches[:SHOWN_SWITCHES]:
        echo(
            f"  {s['time_h']:5.2f} h, battery {s['battery_percent']:.1f}% -> {s['point']!r} "
            f"(rule {s['rule']!r})"
        )
        for line in s["reasons"][:5]:
            echo(f"        {line}")


@click.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--trace",
    type=click.Path(exists=True, dir_okay=False),
    help="Trace CSV (time_s,requests_per_s,charging[,ambient_c][,battery_percent]); "
    "default: a synthetic day from 07:00.",
)
@click.option(
    "--policy",
    type=click.Path(exists=True, dir_okay=False),
    help="Policy file (.toml/.json); default: most accurate when charging or above 50% "
    "battery, least energy within 1 point of the full model at 20-50%, at most "
    "half its energy below 20%.",
)
@click.option(
    "--backend",
    default="onnxruntime",
    show_default=True,
    type=click.Choice(BACKENDS),
    help="Whose cost table (costs.<backend>.json beside the bundle) to use.",
)
@click.option(
    "--costs", type=click.Path(exists=True, dir_okay=False), help="A cost table file instead."
)
@click.option(
    "--slowdown",
    type=click.FloatRange(0, min_open=True),
    help="The target device is N× slower than the machine that measured the cost table.",
)
@click.option(
    "--battery-wh", type=click.FloatRange(0, min_open=True), help="Battery capacity in Wh."
)
@click.option(
    "--power-w", type=click.FloatRange(0, min_open=True), help="Device power while a stage runs."
)
@click.option(
    "--load-scale",
    type=click.FloatRange(0, min_open=True),
    help=f"Multiply the trace's requests/s [default {SYNTHETIC_LOAD_SCALE:g} for the "
    "synthetic day, 1 for --trace].",
)
@click.option(
    "--step-s",
    type=click.FloatRange(0, min_open=True),
    help="The policy decides at least every N simulated seconds.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic day and jitter.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Folder for simulate.json and simulate.png (drawn with matplotlib) "
    "[default: BUNDLE/../simulate].",
)
def simulate(
    bundle,
    trace,
    policy,
    backend,
    costs,
    slowdown,
    battery_wh,
    power_w,
    load_scale,
    step_s,
    seed,
    out,
) -> None:
    """Replay a day of battery and load on a SIMULATED device: the policy against always-full
    and always-earliest; battery lifetime gained at what accuracy cost (simulated).

    Options left out take the defaults of ponder.runtime's `Scenario` (a small always-on
    camera wearable); every assumption is printed with the results and stored in the JSON."""
    from ponder.runtime._sim.simulate import Scenario

    given = {
        "slowdown": slowdown,
        "battery_wh": battery_wh,
        "power_w": power_w,
        "load_scale": load_scale,
        "step_s": step_s,
    }
    default_load = 1.0 if trace else SYNTHETIC_LOAD_SCALE
    scenario = replace(
        Scenario(load_scale=default_load), **{k: v for k, v in given.items() if v is not None}
    )
    run_simulate(
        bundle,
        trace=trace,
        policy=policy,
        backend=backend,
        costs=costs,
        scenario=scenario,
        out=out,
        seed=seed,
        echo=click.echo,
    )
