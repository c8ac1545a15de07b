"""Evaluating and calibrating a trained early-exit model on one data set, as tables and JSON:
shared by `ponder demo` and `ponder evaluate`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ponder._calibration.evaluate import calibrate, evaluate, exit_data
from ponder._calibration.plots import plot_exits
from ponder._calibration.points import operating_points
from ponder._calibration.thresholds import thresholds_for_budget
from ponder._core.report import format_table, write_json
from ponder._early_exit.flops import ExitCosts, count_costs
from ponder.data.datasets import Splits

Echo = Callable[[str], None]


def assess(
    model: nn.Module,
    splits: Splits,
    *,
    rule: str,
    delta: float,
    epsilon: float,
    echo: Echo,
    costs: ExitCosts | None = None,
    budget: float | None = None,
) -> dict[str, Any]:
    """Per-exit metrics on test, operating points and a risk-controlled threshold fitted on the
    calibration split and measured on test (and, with `budget`, per-exit thresholds matched to
    that FLOPs fraction on the calibration split); prints the tables and returns everything."""
    costs = costs or count_costs(model, splits.test.x)
    calib = exit_data(model, splits.calib.x, splits.calib.y, costs, rule=rule)
    test = exit_data(model, splits.test.x, splits.test.y, costs, rule=rule)
    report = evaluate(test)
    echo_exits(report, echo)
    risk = calibrate(calib, delta, epsilon)
    points = operating_points(calib)
    chosen = test.outcome(risk.threshold)
    rows = [_row(f"{p.thresholds[0]:.4g}", test.outcome(p.thresholds[0])) for p in points]
    rows.append(_row(f"{risk.threshold:.4g} (risk-controlled)", chosen))
    result: dict[str, Any] = {}
    if budget is not None:
        per_exit = thresholds_for_budget(calib.scores, calib.exit_costs, costs.full, budget)
        result["budget"] = {"budget": budget, "thresholds": per_exit, **test.outcome(per_exit)}
        rows.append(_row(f"per exit, for {budget:.0%} FLOPs", result["budget"]))
    echo(
        f"operating points of the {rule!r} rule: thresholds chosen on the calibration split, "
        f"measured on the test split (full model {report['full_accuracy']:.2%}):"
    )
    echo(format_table(["threshold", "FLOPs", "accuracy", "drop vs full", "exits per head"], rows))
    echo(
        "(FLOPs: mean per sample against the original model, heads included; drop vs full: "
        "accuracy lost against the original model; exits per head: where the samples left)"
    )
    echo(
        f"risk control: accuracy drop <= {delta:.0%} with probability >= {1 - epsilon:.0%} "
        f"(Learn-then-Test, {risk.bound} bound, n={risk.n}): {risk.reason}"
    )
    return result | {
        "costs": costs,
        "test": report,
        "risk_control": risk,
        "risk_control_test": chosen,
        "operating_points": points,
        "test_data": test,
    }


def echo_exits(report: dict[str, Any], echo: Echo) -> None:
    echo(
        "each exit on the test split (ECE: calibration error; EEFP: AUROC of the exit's "
        "confidence against 'stopping here is right', 0.5 = chance):"
    )
    columns = zip(
        report["exit_flops_fraction"],
        report["exit_accuracy"],
        report["exit_ece"],
        report["eefp"],
        strict=True,
    )
    rows = [[k, f"{f:.0%}", f"{a:.2%}", e, p] for k, (f, a, e, p) in enumerate(columns)]
    echo(format_table(["exit", "FLOPs", "accuracy", "ECE", "EEFP"], rows))


def write_assessment(out: Path, result: dict[str, Any], title: str) -> tuple[Path, Path]:
    """report.json and exits.png (curve with the risk-controlled point, per-exit bars)."""
    report, chosen = result["test"], result["risk_control_test"]
    plot = plot_exits(
        out / "exits.png",
        {"test split": report["curve"]},
        {"exits": {"accuracy": report["exit_accuracy"], "eefp": report["eefp"]}},
        points={"risk-controlled": (chosen["flops_fraction"], chosen["accuracy"])},
        full_accuracy=report["full_accuracy"],
        title=title,
    )
    summary = {k: v for k, v in result.items() if k != "test_data"}
    return write_json(out / "report.json", summary), plot


def _row(label: str, outcome: dict[str, Any]) -> list[Any]:
    fractions = " ".join(f"{f:.0%}" for f in outcome["exit_fractions"])
    return [
        label,
        f"{outcome['flops_fraction']:.1%}",
        f"{outcome['accuracy']:.2%}",
        f"{outcome['accuracy_drop']:+.2%}",
        fractions,
    ]
