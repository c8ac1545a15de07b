"""`ponder bench exits`: SDN against ZTW heads on MNIST-1D — accuracy per FLOPs budget, EEFP,
risk-controlled savings — and the wall-clock check that time tracks FLOPs."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ponder._convert import convert_
from ponder._early_exit import EarlyExitConfig
from ponder._evaluate import ExitData, calibrate, evaluate, exit_data, flops_saved_at_drop
from ponder._flops import count_costs
from ponder._plots import plot_exits
from ponder._recipes import fit_recipe, load_recipe_data
from ponder._report import format_table, write_json
from ponder._timing import machine
from ponder._train import TrainConfig, train_exits
from ponder._wallclock import time_operating_point

STYLES = ("sdn", "ztw")


def run_bench_exits(
    out: str | Path = "ponder-bench/exits",
    *,
    samples: int | None = None,
    epochs: int | None = None,
    num_exits: int = 5,
    head: str = "mlp",
    delta: float = 0.01,
    epsilon: float = 0.1,
    repeats: int = 15,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train one MNIST-1D CNN, give copies SDN and ZTW heads, and compare them side by side."""
    from ponder.models import MNIST1D_RECIPE

    recipe = dict(MNIST1D_RECIPE)
    recipe.update({k: v for k, v in {"num_samples": samples, "epochs": epochs}.items() if v})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.get("seed", 0))
    splits = load_recipe_data(recipe)
    base, stats = fit_recipe(recipe, splits, progress)
    echo(
        f"base {recipe['model']} on MNIST-1D ({len(splits.train)} train samples): test accuracy "
        f"{stats['test_acc']:.2%}, trained in {stats['seconds']:.0f} s"
    )
    results: dict[str, Any] = {"recipe": recipe, "base": stats, "machine": machine()}
    models, data = {}, {}
    for style in STYLES:
        model = convert_(
            copy.deepcopy(base), EarlyExitConfig(num_exits=num_exits, head=head, style=style)
        )
        history = train_exits(model, splits.train.x, splits.train.y, TrainConfig(progress=progress))
        costs = count_costs(model, splits.test.x)
        calib = exit_data(model, splits.calib.x, splits.calib.y, costs)
        test = exit_data(model, splits.test.x, splits.test.y, costs)
        models[style], data[style] = model, test
        results[style] = _accuracy_section(calib, test, delta, epsilon) | {"train": history}
    _echo_accuracy(results, echo, delta, epsilon)
    results["wallclock"] = _wallclock(
        models["ztw"], data["ztw"], splits.test.x, results["ztw"], repeats
    )
    _echo_wallclock(results["wallclock"], results["machine"], echo)
    _write(out, results, data)
    echo(f"wrote {out / 'exits.json'} and {out / 'exits.png'}")
    return results


def _accuracy_section(
    calib: ExitData, test: ExitData, delta: float, epsilon: float
) -> dict[str, Any]:
    report = evaluate(test)
    risk = calibrate(calib, delta, epsilon)
    curve = report.pop("curve")
    return {
        **report,
        "curve": curve,
        "risk_control": risk,
        "risk_control_test": test.outcome(risk.threshold),
        "flops_saved_at_1pp_test_oracle": flops_saved_at_drop(
            curve.accuracy, curve.flops_fraction, report["full_accuracy"], 0.01
        ),
        "head_overhead": test.costs.head_overhead,
    }


def _wallclock(model, test: ExitData, x: torch.Tensor, ztw: dict[str, Any], repeats: int):
    """Operating points at ~25/50/75% FLOPs on the test curve plus the risk-controlled one."""
    curve = ztw["curve"]
    points = {f"~{int(100 * f)}% FLOPs": _threshold_near(curve, f) for f in (0.25, 0.5, 0.75)}
    points["risk-controlled"] = ztw["risk_control"].threshold
    rows = []
    for batch_size, n in ((1, 200), (256, 2048)):
        for label, threshold in points.items():
            row = time_operating_point(model, x[:n], test.costs, threshold, batch_size, repeats)
            rows.append({"point": label, **row})
    return rows


def _threshold_near(curve, fraction: float) -> float:
    i = int(abs(curve.flops_fraction - fraction).argmin())
    return float(curve.thresholds[i])


def _echo_accuracy(results: dict[str, Any], echo, delta: float, epsilon: float) -> None:
    budgets = list(results["ztw"]["accuracy_at_budget"])
    rows = []
    for style in STYLES:
        r = results[style]
        risk = r["risk_control_test"]
        rows.append(
            [
                style.upper(),
                *(f"{r['accuracy_at_budget'][b]:.2%}" for b in budgets),
                f"{r['auc']:.4f}",
                f"{1 - risk['flops_fraction']:.1%}",
                f"{risk['accuracy_drop']:+.2%}",
                f"{r['flops_saved_at_1pp_test_oracle']:.1%}",
            ]
        )
    echo(
        f"\naccuracy at a FLOPs budget (test split; full model {results['ztw']['full_accuracy']:.2%}); "
        f"risk control: drop <= {delta:.0%} w.p. >= {1 - epsilon:.0%}, fitted on the calibration split"
    )
    echo(
        format_table(
            [
                "heads",
                *(f"@{float(b):.0%}" for b in budgets),
                "AUC",
                "saved (risk)",
                "drop (risk)",
                "saved @<=1pp (test oracle)",
            ],
            rows,
        )
    )
    echo("\nper exit (test): FLOPs fraction / accuracy / EEFP")
    fractions = results["ztw"]["exit_flops_fraction"]
    echo(
        format_table(
            [
                "exit",
                "FLOPs",
                *(f"{s.upper()} acc" for s in STYLES),
                *(f"{s.upper()} EEFP" for s in STYLES),
            ],
            [
                [
                    k,
                    f"{f:.0%}",
                    *(f"{results[s]['exit_accuracy'][k]:.2%}" for s in STYLES),
                    *(results[s]["eefp"][k] for s in STYLES),
                ]
                for k, f in enumerate(fractions)
            ],
        )
    )


def _echo_wallclock(rows: list[dict[str, Any]], info: dict[str, Any], echo) -> None:
    echo(
        f"\nwall-clock, ZTW exits vs the unconverted model ({info['backend']}, {info['threads']} threads, "
        f"{info['cpu']}); medians of interleaved repeats"
    )
    echo(
        format_table(
            ["batch", "point", "FLOPs frac", "time frac", "ms full", "ms adaptive"],
            [
                [
                    r["batch_size"],
                    r["point"],
                    f"{r['flops_fraction']:.3f}",
                    f"{r['time_fraction']:.3f}",
                    f"{r['median_ms_full']:.1f}",
                    f"{r['median_ms_adaptive']:.1f}",
                ]
                for r in rows
            ],
        )
    )


def _write(out: Path, results: dict[str, Any], data: dict[str, ExitData]) -> None:
    write_json(out / "exits.json", results)
    plot_exits(
        out / "exits.png",
        {s.upper(): results[s]["curve"] for s in STYLES},
        {
            s.upper(): {"accuracy": results[s]["exit_accuracy"], "eefp": results[s]["eefp"]}
            for s in STYLES
        },
        points={
            f"{s.upper()} risk-controlled": (
                results[s]["risk_control_test"]["flops_fraction"],
                results[s]["risk_control_test"]["accuracy"],
            )
            for s in STYLES
        },
        full_accuracy=results["ztw"]["full_accuracy"],
        title="MNIST-1D: SDN vs ZTW exit heads",
    )
