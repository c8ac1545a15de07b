"""`ponder demo`: early exits end to end on the digits data, explained as it goes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ponder._calibration.metrics import simulate_exits
from ponder._calibration.report import assess, write_assessment
from ponder._convert.checkpoint import save
from ponder._convert.convert import convert_
from ponder._early_exit.config import EarlyExitConfig
from ponder._early_exit.flops import count_costs
from ponder._early_exit.infer import infer
from ponder._early_exit.train import TrainConfig, train_exits
from ponder.models.recipes import fit_recipe, load_recipe_data

RULE = "max_prob"  # on a ZTW model the exits' outputs are the learned ensembles


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
        f"[1/7] digits (scikit-learn, 8x8 images): {len(splits.train)} train / {len(splits.calib)} "
        f"calibration / {len(splits.test)} test"
    )
    model, stats = fit_recipe(DIGITS_RECIPE, splits, progress)
    echo(
        f"      base CNN trained in {stats['seconds']:.1f} s: test accuracy {stats['test_acc']:.2%}"
    )

    convert_(model, EarlyExitConfig(num_exits=3, style="ztw"))
    history = train_exits(model, splits.train.x, splits.train.y, TrainConfig(progress=progress))
    costs = count_costs(model, splits.test.x)
    echo(
        f"[2/7] added 3 ZTW exit heads (cascading, with a learned ensemble; backbone frozen) in "
        f"{history['seconds']:.1f} s; together they cost {costs.head_overhead:.2%} of the model's FLOPs"
    )

    echo("[3/7] evaluation and calibration")
    result = assess(
        model, splits, rule=RULE, delta=delta, epsilon=epsilon, echo=echo, costs=costs, budget=0.5
    )
    threshold = result["risk_control"].threshold
    online = infer(model, splits.test.x, rule=RULE, thresholds=threshold)
    offline = simulate_exits(result["test_data"].scores, threshold)
    agree = bool(np.array_equal(online.exit_index.numpy(), offline))
    echo(
        f"[4/7] one batched adaptive run over the {len(splits.test)} test images at the "
        f"risk-controlled threshold: samples per exit {online.exit_counts()} (exited samples leave "
        f"the batch); {'matches' if agree else 'DOES NOT match'} the offline table"
    )

    extra = {
        "data": {"name": "digits", "seed": DIGITS_RECIPE.get("seed", 0)},
        "rule": RULE,
        "risk_control": result["risk_control"].to_dict(),
    }
    save(model, out / "checkpoint", extra=extra)
    result |= {"base": stats, "online_matches_offline": agree}
    report, plot = write_assessment(out, result, "ponder demo: digits CNN with ZTW exits")
    echo(f"wrote {out / 'checkpoint'} (safetensors + config.json), {plot} and {report}")
    result["export"] = _export_and_run(out, splits.test.x, threshold, online, echo)
    if not result["export"].get("skipped"):
        from ponder._cli.demo_policy import policy_drain

        echo("[6/7] the bundle under a battery-dependent policy, on a SIMULATED device")
        result["policy"] = policy_drain(
            out / "bundle", splits.test.x.numpy(), splits.test.y.numpy(), echo
        )
        echo(_OFFLOAD_STEP)
        result["offload"] = _offload(out, progress, echo)
    echo(f"next: ponder evaluate {out / 'checkpoint'} --delta 0.01")
    return result


_OFFLOAD_STEP = (
    "[7/7] edge and cloud: a digits ViT split after block 3, its cloud half behind `ponder "
    "serve` on loopback, the device offloading under a 50 ms budget; then the server stops"
)


def _offload(out: Path, progress: bool, echo) -> dict:
    import importlib.util

    if not all(importlib.util.find_spec(p) for p in ("uvicorn", "starlette")):
        echo("      skipped: pip install 'ponder[serve]' to include it")
        return {"skipped": True}
    from ponder._cli.demo_offload import offload_demo

    return offload_demo(out, echo, progress)


def _export_and_run(out: Path, x: torch.Tensor, threshold: float, online: Any, echo) -> dict:
    """Export the checkpoint as a bundle and run its ExecuTorch stages once over the test
    images: all stages for every image, then the exit rule applied to the exported exits'
    log-probabilities; the exits and predictions must equal the eager adaptive run's."""
    import importlib.util

    if not all(importlib.util.find_spec(p) for p in ("executorch", "onnxruntime", "onnxscript")):
        echo("[5/7] skipped the device export: pip install 'ponder[export,onnx]' to include it")
        return {"skipped": True}
    from ponder._core.rules import exit_rule, offline_scores
    from ponder.export import export_checkpoint
    from ponder.export._stages.trace import MAX_BATCH
    from ponder.runtime import Bundle
    from ponder.runtime._backends.executorch import ExecuTorchBackend

    echo("[5/7] device bundle: ExecuTorch program (XNNPACK) with one method per stage + ONNX")
    export_checkpoint(out / "checkpoint", out / "bundle", echo=lambda line: echo("      " + line))
    bundle = Bundle.open(out / "bundle")
    backend = ExecuTorchBackend(bundle)  # the backend Engine runs the program with
    chunks = [_run_stages(backend, bundle.manifest.stages, part) for part in x.split(MAX_BATCH)]
    logp = np.concatenate(chunks, axis=1)  # [K, N, C]
    scores, preds = offline_scores(exit_rule(RULE, ensembled=True), logp)
    exits = simulate_exits(scores, threshold)
    prediction = preds[exits, np.arange(len(exits))]
    same = bool(
        np.array_equal(exits, online.exit_index.numpy())
        and np.array_equal(prediction, online.prediction.numpy())
    )
    echo(
        f"      ran the exported stages on the {len(x)} test images: exits per stage "
        f"{np.bincount(exits, minlength=logp.shape[0]).tolist()}; exits and predictions "
        f"{'match' if same else 'DO NOT match'} the eager run"
    )
    return {"bundle": str(out / "bundle"), "matches_eager": same}


def _run_stages(backend: Any, stages: Any, x: torch.Tensor) -> np.ndarray:
    """Every exit's log-probs [K, B, C] from the program's stage methods, chained by name (the
    early exits return log-probs already; the last stage returns logits)."""
    from ponder.export._stages.plan import run_chain

    io = [([t.name for t in s.inputs], [t.name for t in s.outputs]) for s in stages]
    known = run_chain(backend, io, {"x": x.numpy()})
    logp = [known[f"exit_logp_{s.index}"] for s in stages if s.exit]
    logits = torch.from_numpy(known["logits"])
    return np.stack([*logp, torch.log_softmax(logits, -1).numpy()])
