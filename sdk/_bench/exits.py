"""`ponder bench exits`: SDN against ZTW heads on one backbone (the MNIST-1D CNN, the digits ViT
or MiniLM on stdlib docstrings) — accuracy per FLOPs budget, EEFP and ECE per head,
risk-controlled savings, over several seeds — and, for the CNN, the wall-clock check that time
tracks FLOPs (exported bundles are timed by `ponder bench export` and `ponder bench runtime`)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ponder._bench.exits_models import DEFAULT_MAX_LENGTH, DEFAULT_SAMPLES, bench_model
from ponder._bench.report import echo_accuracy, echo_wallclock, write_outputs
from ponder._bench.timing import machine
from ponder._bench.wallclock import exit_overhead, time_operating_point
from ponder._calibration.evaluate import (
    ExitData,
    calibrate,
    evaluate,
    exit_data,
    flops_saved_at_drop,
)
from ponder._convert.calls import take
from ponder._convert.convert import convert_
from ponder._early_exit.config import EarlyExitConfig
from ponder._early_exit.flops import count_costs
from ponder._early_exit.train import TrainConfig, train_exits

STYLES = ("sdn", "ztw")
SUMMARY_KEYS = ("auc", "saved_risk", "drop_risk", "saved_1pp_oracle")


def run_bench_exits(
    out: str | Path = "ponder-bench/exits",
    *,
    model: str = "mnist1d-cnn",
    samples: int = DEFAULT_SAMPLES,
    width: int | None = None,
    epochs: int | None = None,
    texts: int | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    seeds: int = 3,
    num_exits: int = 5,
    head: str = "linear",
    delta: float = 0.01,
    epsilon: float = 0.1,
    repeats: int = 15,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """For each seed: train (or load) one base model, give copies SDN and ZTW heads, compare
    them on the same test split. `samples` applies to the MNIST-1D CNN, `width` and `epochs` to
    both trained backbones (None: the CNN at width 128, the ViT as its recipe), `texts` and
    `max_length` to MiniLM. The wall-clock check runs on the first seed's ZTW CNN only."""
    out = Path(out)
    bench = bench_model(
        model, samples=samples, width=width, epochs=epochs, texts=texts, max_length=max_length
    )
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model": model,
        "description": bench.description,
        **bench.config,
        "seeds": seeds,
        "num_exits": num_exits,
        "head": head,
        "delta": delta,
        "epsilon": epsilon,
    }
    runs, first = [], None
    for seed in range(seeds):
        run, models = _one_seed(bench, seed, num_exits, head, delta, epsilon, progress)
        echo(
            f"seed {seed}: base model test accuracy {run['base']['test_acc']:.2%} "
            f"({run['base']['seconds']:.0f} s); ZTW AUC {run['ztw']['auc']:.4f} vs SDN {run['sdn']['auc']:.4f}"
        )
        runs.append(run)
        first = first or models
    results = {"config": config, "machine": machine(), "runs": runs, "summary": _summarise(runs)}
    echo_accuracy(results, echo)
    if model == "mnist1d-cnn":
        ztw_model, data, x = first
        results["wallclock"] = _wallclock(ztw_model, data, x, runs[0]["ztw"], repeats)
        echo_wallclock(results["wallclock"], results["machine"], echo)
    write_outputs(out, results)
    echo(f"wrote {out / 'exits.json'} and {out / 'exits.png'}")
    return results


def _one_seed(bench, seed, num_exits, head, delta, epsilon, progress):
    prepared = bench.prepare(seed, progress)
    splits, base = prepared.splits, prepared.base
    run: dict[str, Any] = {"seed": seed, "base": prepared.stats}
    for style in STYLES:
        config = EarlyExitConfig(
            num_exits=num_exits, head=head, style=style, pooling=prepared.pooling
        )
        example = take(splits.train.x, slice(0, 2))
        model = convert_(copy.deepcopy(base), config, example_inputs=example)
        train_exits(
            model, splits.train.x, splits.train.y, TrainConfig(progress=progress, seed=seed)
        )
        costs = count_costs(model, splits.test.x)
        calib = exit_data(model, splits.calib.x, splits.calib.y, costs)
        test = exit_data(model, splits.test.x, splits.test.y, costs)
        run[style] = _accuracy_section(calib, test, delta, epsilon)
    return run, (model, test, splits.test.x)  # the last style is ZTW


def _accuracy_section(
    calib: ExitData, test: ExitData, delta: float, epsilon: float
) -> dict[str, Any]:
    report = evaluate(test)
    risk = calibrate(calib, delta, epsilon)
    chosen = test.outcome(risk.threshold)
    curve = report["curve"]
    return {
        **report,
        "risk_control": risk,
        "risk_control_test": chosen,
        "saved_risk": 1 - chosen["flops_fraction"],
        "drop_risk": chosen["accuracy_drop"],
        "saved_1pp_oracle": flops_saved_at_drop(
            curve.accuracy, curve.flops_fraction, report["full_accuracy"], 0.01
        ),
        "head_overhead": test.costs.head_overhead,
    }


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds, per style, of the headline figures."""
    summary: dict[str, Any] = {}
    for style in STYLES:
        per_seed = {key: [run[style][key] for run in runs] for key in SUMMARY_KEYS}
        budgets = runs[0][style]["accuracy_at_budget"]
        for b in budgets:
            per_seed[f"acc@{b}"] = [run[style]["accuracy_at_budget"][b] for run in runs]
        per_seed["eefp"] = [run[style]["eefp"] for run in runs]
        per_seed["exit_accuracy"] = [run[style]["exit_accuracy"] for run in runs]
        per_seed["exit_ece"] = [run[style]["exit_ece"] for run in runs]
        with warnings.catch_warnings():  # the last exit's EEFP is NaN by definition
            warnings.simplefilter("ignore", RuntimeWarning)
            summary[style] = {
                k: {
                    "mean": np.nanmean(v, axis=0).tolist(),
                    "std": np.nanstd(v, axis=0).tolist(),
                    "per_seed": v,
                }
                for k, v in per_seed.items()
            }
    summary["exit_flops_fraction"] = runs[0]["ztw"]["exit_flops_fraction"]
    summary["full_accuracy"] = [run["ztw"]["full_accuracy"] for run in runs]
    return summary


def _wallclock(model, test: ExitData, x: torch.Tensor, ztw: dict[str, Any], repeats: int):
    """Operating points at ~25/50/75% FLOPs on the test curve plus the risk-controlled one."""
    curve = ztw["curve"]
    points = {f"~{int(100 * f)}% FLOPs": _threshold_near(curve, f) for f in (0.25, 0.5, 0.75)}
    points["risk-controlled"] = ztw["risk_control"].threshold
    rows, overhead = [], []
    for batch_size, n in ((1, 200), (64, 1024), (256, 1024)):
        overhead.append(exit_overhead(model, x[:n], test.costs, batch_size, repeats))
        for label, threshold in points.items():
            row = time_operating_point(model, x[:n], test.costs, threshold, batch_size, repeats)
            rows.append({"point": label, **row})
    return {"points": rows, "overhead": overhead}


def _threshold_near(curve, fraction: float) -> float:
    i = int(abs(curve.flops_fraction - fraction).argmin())
    return float(curve.thresholds[i])
