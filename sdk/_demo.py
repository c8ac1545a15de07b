"""`ponder demo`: early exits end to end on the digits data, explained as it goes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ponder._checkpoint import save
from ponder._convert import convert_
from ponder._early_exit import EarlyExitConfig
from ponder._evaluate import calibrate, evaluate, exit_data, operating_points
from ponder._flops import count_costs
from ponder._infer import infer
from ponder._metrics import simulate_exits
from ponder._plots import plot_exits
from ponder._recipes import fit_recipe, load_recipe_data
from ponder._report import format_table, write_json
from ponder._train import TrainConfig, train_exits


def run_demo(
    out: str | Path = "ponder-demo",
    delta: float = 0.02,
    epsilon: float = 0.1,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a digits CNN, add ZTW exits, calibrate for `delta`, write checkpoint, plot, report."""
    from ponder.models import DIGITS_RECIPE

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    splits = load_recipe_data(DIGITS_RECIPE)
    echo(
        f"[1/5] digits: {len(splits.train)} train / {len(splits.calib)} calibration / {len(splits.test)} test images (8x8)"
    )
    model, stats = fit_recipe(DIGITS_RECIPE, splits, progress)
    echo(
        f"      base CNN trained in {stats['seconds']:.1f} s: test accuracy {stats['test_acc']:.2%}"
    )

    convert_(model, EarlyExitConfig(num_exits=3, style="ztw"))
    history = train_exits(model, splits.train.x, splits.train.y, TrainConfig(progress=progress))
    costs = count_costs(model, splits.test.x)
    echo(
        f"[2/5] added 3 ZTW exit heads (backbone frozen) in {history['seconds']:.1f} s; "
        f"heads cost {costs.head_overhead:.2%} of the model's FLOPs"
    )

    calib = exit_data(model, splits.calib.x, splits.calib.y, costs)
    test = exit_data(model, splits.test.x, splits.test.y, costs)
    report = evaluate(test)
    echo(
        "[3/5] each exit on the test split (accuracy; ECE = calibration error; EEFP = how well "
        "confidence predicts 'stopping here is right', 0.5 = chance):"
    )
    echo(
        format_table(
            ["exit", "FLOPs", "accuracy", "ECE", "EEFP"],
            [
                [k, f"{f:.0%}", f"{a:.2%}", e, p]
                for k, (f, a, e, p) in enumerate(
                    zip(
                        report["exit_flops_fraction"],
                        report["exit_accuracy"],
                        report["exit_ece"],
                        report["eefp"],
                        strict=True,
                    )
                )
            ],
        )
    )

    risk = calibrate(calib, delta, epsilon)
    points = operating_points(calib)
    rows = [_row(f"{p['threshold']:.3f}", test.outcome(p["threshold"])) for p in points]
    chosen = test.outcome(risk.threshold)
    rows.append(_row(f"{risk.threshold:.3f} (risk-controlled)", chosen))
    echo(
        f"[4/5] operating points, chosen on the calibration split, measured on the test split "
        f"(full model: {report['full_accuracy']:.2%}):"
    )
    echo(format_table(["threshold", "FLOPs", "accuracy", "drop vs full", "exits per head"], rows))
    echo(
        f"      risk control: accuracy drop <= {delta:.0%} with probability >= {1 - epsilon:.0%} "
        f"(Learn-then-Test, {risk.bound} bound, n={risk.n}); {risk.reason}"
    )

    online = infer(model, splits.test.x, thresholds=risk.threshold)
    offline = simulate_exits(test.scores, risk.threshold)
    agree = bool(np.array_equal(online.exit_index.numpy(), offline))
    echo(
        f"[5/5] batched adaptive run on {len(splits.test)} test images at the risk-controlled "
        f"threshold: exits per head {online.exit_counts()}; "
        f"{'matches' if agree else 'DOES NOT match'} the offline table"
    )

    plot = plot_exits(
        out / "exits.png",
        {"ZTW exits (test)": report["curve"]},
        {"ZTW": {"accuracy": report["exit_accuracy"], "eefp": report["eefp"]}},
        points={"risk-controlled": (chosen["flops_fraction"], chosen["accuracy"])},
        full_accuracy=report["full_accuracy"],
        title="ponder demo: digits, ZTW exits",
    )
    summary = {
        "base": stats,
        "costs": costs,
        "test": report,
        "risk_control": risk,
        "risk_control_test": chosen,
        "operating_points": points,
        "online_matches_offline": agree,
    }
    save(
        model,
        out / "checkpoint",
        extra={"data": {"name": "digits"}, "rule": "max_prob", "risk_control": risk.to_dict()},
    )
    write_json(out / "report.json", summary)
    echo(
        f"wrote {out / 'checkpoint'} (safetensors + config.json), {plot} and {out / 'report.json'}"
    )
    return summary


def _row(label: str, outcome: dict[str, Any]) -> list[Any]:
    fractions = " ".join(f"{f:.0%}" for f in outcome["exit_fractions"])
    return [
        label,
        f"{outcome['flops_fraction']:.1%}",
        f"{outcome['accuracy']:.2%}",
        f"{outcome['accuracy_drop']:+.2%}",
        fractions,
    ]
