"""The bundle `ponder bench runtime` measures: a digits CNN (wider than the demo's, so a stage
takes a fraction of a millisecond, not microseconds) with ZTW exits, calibrated and exported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ponder._calibration.evaluate import calibrate, exit_data
from ponder._convert.checkpoint import save
from ponder._convert.convert import convert_
from ponder._early_exit.config import EarlyExitConfig
from ponder._early_exit.flops import count_costs
from ponder.models.recipes import fit_recipe, load_recipe_data

RULE = "max_prob"


def bench_bundle(
    out: Path, *, width: int, progress: bool, echo: Callable[[str], None]
) -> tuple[Path, Any]:
    """Train, add exits, calibrate (accuracy drop <= 2% w.p. >= 90%) and export (XNNPACK + ONNX)
    into out/bundle; returns the bundle path and the data splits."""
    from ponder.export import export_checkpoint
    from ponder.models import DIGITS_RECIPE

    recipe = {**DIGITS_RECIPE, "width": width}
    torch.manual_seed(0)
    splits = load_recipe_data(recipe)
    model, stats = fit_recipe(recipe, splits, progress)
    echo(
        f"digits CNN, width {width}: test accuracy {stats['test_acc']:.2%} "
        f"({stats['seconds']:.0f} s of training)"
    )
    convert_(model, EarlyExitConfig(num_exits=3, style="ztw"))
    from ponder._early_exit.train import TrainConfig, train_exits

    train_exits(model, splits.train.x, splits.train.y, TrainConfig(progress=progress))
    costs = count_costs(model, splits.calib.x[:8])
    risk = calibrate(exit_data(model, splits.calib.x, splits.calib.y, costs, rule=RULE), 0.02, 0.1)
    extra = {
        "data": {"name": "digits", "seed": recipe.get("seed", 0)},
        "rule": RULE,
        "risk_control": risk.to_dict(),
    }
    save(model, out / "checkpoint", extra=extra)
    export_checkpoint(out / "checkpoint", out / "bundle", echo=lambda line: echo("  " + line))
    return out / "bundle", splits


def held_out(splits: Any) -> tuple[Any, Any]:
    """(x, y) of the test split as numpy arrays."""
    return splits.test.x.numpy(), splits.test.y.numpy()
