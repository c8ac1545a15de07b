"""`ponder bench transformer`: a real transformer classifier with early exits (the digits ViT
trained from scratch, or the frozen all-MiniLM-L6-v2 with exits trained on stdlib docstrings),
exported twice — with its exits (a stage per exit) and whole, without exits (one stage) — and run
by the engine on ONNX Runtime and ExecuTorch at batch 1 and 64: for each operating point, its
time against the whole model's beside the FLOPs of the exits the samples really took."""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ponder._bench.export_time import runtime_threads
from ponder._bench.timing import interleaved, machine
from ponder._bench.transformer_report import add_goals, echo_tables, write_outputs
from ponder._core.errors import ConfigError
from ponder._core.points import OperatingPoint
from ponder.runtime._bundle.layout import MANIFEST

__all__ = ["BACKENDS", "run_bench_transformer"]

BACKENDS = ("onnxruntime", "executorch")
MODELS = ("minilm-docstrings", "digits-vit")
AGAIN = "whole again"  # the A/A control variant
TEST_FILE = "test.npz"  # the held-out rows the bundles are timed on (x_<input name>, y)
SAMPLE_ROWS = 8  # rows of the calibration split traced with and stored in the bundles
# FLOPs fractions near which the timed operating points are picked from the bundle's table
TARGETS = (0.25, 0.5, 0.75)


def run_bench_transformer(
    out: str | Path = "ponder-bench/transformer",
    *,
    model: str = "minilm-docstrings",
    num_exits: int = 3,
    style: str = "ztw",
    seed: int = 0,
    epochs: int | None = None,
    samples: int = 256,
    batches: Sequence[int] = (1, 64),
    max_length: int = 48,
    delta: float = 0.01,
    epsilon: float = 0.1,
    repeats: int = 10,
    warmup: int = 1,
    threads: int | None = None,
    backends: Sequence[str] = BACKENDS,
    reuse: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build (or, with `reuse`, load) the two bundles under `out`, time every operating point
    against the whole model on each backend and batch size, write transformer.json and
    transformer.png there, print the tables, and return the results. epochs: the digits ViT's
    training epochs (None: its recipe's); max_length: MiniLM's tokens per text at most."""
    if model not in MODELS:
        raise ConfigError(f"Unknown model {model!r}; ponder bench transformer knows {MODELS}.")
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ConfigError(f"Unknown backends {sorted(unknown)}; choose from {BACKENDS}.")
    if samples < max(batches):
        raise ConfigError(f"samples ({samples}) must be at least the largest batch.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = threads or os.cpu_count() or 1
    config = {
        "model": model,
        "num_exits": num_exits,
        "style": style,
        "seed": seed,
        "epochs": epochs,
        "max_length": max_length,
        "delta": delta,
        "epsilon": epsilon,
    }
    bundles = _bundles(out, config, reuse, progress, echo)
    x, y = _test_rows(out / TEST_FILE, samples)
    manifests = {k: json.loads((b / MANIFEST).read_text()) for k, b in bundles.items()}
    flops = _flops(manifests)
    timings = []
    with runtime_threads(threads) as counts:
        for backend in backends:
            staged, whole = (_engine(bundles[k], backend, threads) for k in ("staged", "whole"))
            points = _timed_points(staged)
            echo(f"{backend}: timing {len(points)} operating points against the whole model")
            for batch in batches:
                row = _time_batch(staged, whole, x, y, batch, points, flops, repeats, warmup)
                timings.append({"backend": backend, **row})
                echo(f"  batch {batch}: " + _one_line(row))
    results = {
        "config": {
            **config,
            "description": manifests["staged"]["config"]["bench_transformer"]["description"],
            "samples": len(y),
            "batches": list(batches),
            "max_batch": manifests["staged"]["config"]["export"]["max_batch"],
            "max_tokens": manifests["staged"]["config"]["export"].get("max_tokens"),
            "repeats": repeats,
            "warmup": warmup,
        },
        "machine": {
            **machine(),
            "backend": "engine on ONNX Runtime (CPUExecutionProvider, intra-op spinning off) "
            "and on the ExecuTorch runtime (XNNPACK delegate)",
            "threads": counts,
        },
        "flops": flops,
        "timing": timings,
    }
    add_goals(results)
    echo_tables(results, echo)
    json_path, png_path = write_outputs(out, results)
    echo(f"wrote {json_path} and {png_path}")
    return results


def _one_line(row: dict[str, Any]) -> str:
    parts = [
        f"{p['name']}: time {p['time_fraction_paired']:.3f} / FLOPs {p['flops_fraction']:.3f}"
        for p in row["points"]
    ]
    return "; ".join(parts)


def _engine(bundle: Path, backend: str, threads: int) -> Any:
    from ponder.runtime import Engine

    options = {"threads": threads} if backend == "onnxruntime" else {}
    return Engine.load(bundle, backend, costs=None, **options)


# ---------------------------------------------------------------------------------------------
# the bundles


def _bundles(out: Path, config: dict[str, Any], reuse: bool, progress: bool, echo) -> dict:
    """{"staged": folder, "whole": folder}, written unless `reuse` finds both written with the
    same config (and the test rows beside them)."""
    folders = {"staged": out / "staged", "whole": out / "whole"}
    if (
        reuse
        and (out / TEST_FILE).is_file()
        and all(_written_with(f, config) for f in folders.values())
    ):
        echo(f"reusing the bundles in {out}")
        return folders
    import torch

    from ponder._bench.exits_models import bench_model
    from ponder._calibration.evaluate import calibrate, exit_data
    from ponder._convert.calls import take
    from ponder._convert.convert import convert_
    from ponder._early_exit.config import EarlyExitConfig
    from ponder._early_exit.flops import count_costs
    from ponder._early_exit.train import TrainConfig, train_exits
    from ponder.export import export_bundle
    from ponder.export._checkpoint import exit_rule_and_points

    bench = bench_model(config["model"], epochs=config["epochs"], max_length=config["max_length"])
    prepared = bench.prepare(config["seed"], progress)
    splits, base = prepared.splits, prepared.base.eval()
    echo(f"{bench.description}: base model test accuracy {prepared.stats['test_acc']:.2%}")
    exits = EarlyExitConfig(
        num_exits=config["num_exits"], style=config["style"], pooling=prepared.pooling
    )
    model = convert_(copy.deepcopy(base), exits, example_inputs=take(splits.train.x, slice(0, 2)))
    train_exits(
        model,
        splits.train.x,
        splits.train.y,
        TrainConfig(progress=progress, seed=config["seed"]),
    )
    rows = take(splits.calib.x, slice(0, SAMPLE_ROWS))
    calib = exit_data(model, splits.calib.x, splits.calib.y, count_costs(model, rows))
    risk = calibrate(calib, config["delta"], config["epsilon"])
    rule, points = exit_rule_and_points(
        model, splits, {"rule": "max_prob", "risk_control": risk.to_dict()}
    )
    echo(
        f"exits trained ({config['style']}); risk-controlled threshold {risk.threshold:.4g} "
        f"(accuracy drop <= {config['delta']:.0%} w.p. >= {1 - config['epsilon']:.0%})"
    )
    samples = dict(rows) if isinstance(rows, dict) else {"x": rows}
    key = {**config, "description": bench.description}
    for name, net, extra in (
        ("staged", model, {"exit_rule": rule, "operating_points": points}),
        ("whole", base, {}),
    ):
        echo(f"exporting the {name} bundle to {folders[name]} (ExecuTorch lowering takes a while)")
        with torch.no_grad():
            export_bundle(
                net,
                samples,
                folders[name],
                target="all",
                model_id=f"bench-transformer-{name}",
                config={"bench_transformer": key},
                echo=lambda line: echo("  " + line),
                **extra,
            )
    test = splits.test
    x = dict(test.x) if isinstance(test.x, dict) else {"x": test.x}
    np.savez(
        out / TEST_FILE,
        y=test.y.numpy(),
        **{f"x_{k}": v.numpy() for k, v in x.items()},
    )
    return folders


def _written_with(folder: Path, config: dict[str, Any]) -> bool:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    written = json.loads(manifest.read_text())["config"].get("bench_transformer") or {}
    return {k: written.get(k) for k in config} == config


def _test_rows(path: Path, samples: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    with np.load(path) as f:
        x = {k[2:]: f[k][:samples] for k in f.files if k.startswith("x_")}
        return x, f["y"][:samples]


def _flops(manifests: dict[str, Any]) -> dict[str, Any]:
    """FLOPs of the staged bundle to the end of each stage (heads included) against the whole
    model's, at the token count the bundles were traced with."""
    staged = [s["cumulative_flops"] for s in manifests["staged"]["stages"]]
    whole = manifests["whole"]["stages"][-1]["cumulative_flops"]
    return {
        "whole": whole,
        "cumulative": staged,
        "cumulative_fraction": [f / whole for f in staged],
        "heads_share": (staged[-1] - whole) / staged[-1],
    }


# ---------------------------------------------------------------------------------------------
# the timing


def _timed_points(engine: Any) -> list[OperatingPoint]:
    """From the bundle's table, the shared-threshold points nearest 25, 50 and 75% of the FLOPs
    (each once), the risk-controlled one, and every stage run for every sample."""
    shared = [p for p in engine.points if p.max_stage is None and p.moe_tau is None]
    chosen: list[OperatingPoint] = []
    for target in TARGETS:
        near = min(shared, key=lambda p: abs((p.flops_fraction or 0.0) - target), default=None)
        if near is not None and near not in chosen:
            chosen.append(near)
    chosen += [p for p in shared if p.name == "risk_controlled" and p not in chosen]
    return [*chosen, OperatingPoint.full(len(engine.stages) - 1)]


def _chunks(x: dict[str, np.ndarray], batch: int) -> list[dict[str, np.ndarray]]:
    """Consecutive rows, `batch` at a time; a text chunk is cut to its longest row's tokens, as
    a caller that pads per batch would send it."""
    n = len(next(iter(x.values())))
    chunks = []
    for i in range(0, n, batch):
        c = {k: v[i : i + batch] for k, v in x.items()}
        if "attention_mask" in c:
            tokens = int(c["attention_mask"].sum(axis=1).max())
            c = {k: np.ascontiguousarray(v[:, :tokens]) for k, v in c.items()}
        chunks.append(c)
    return chunks


def _tokens(chunk: dict[str, np.ndarray]) -> int:
    """What a chunk's cost scales with per row: its token count (1 for a fixed-size input)."""
    return chunk["attention_mask"].shape[1] if "attention_mask" in chunk else 1


def _run_all(engine: Any, chunks: list[dict[str, np.ndarray]], point: OperatingPoint) -> list:
    return [engine.run(c, point=point) for c in chunks]


def _time_batch(
    staged: Any,
    whole: Any,
    x: dict[str, np.ndarray],
    y: np.ndarray,
    batch: int,
    points: list[OperatingPoint],
    flops: dict[str, Any],
    repeats: int,
    warmup: int,
) -> dict[str, Any]:
    """Every point and the whole model over the same chunks, interleaved round by round."""
    chunks = _chunks(x, batch)
    whole_point = OperatingPoint.full(len(whole.stages) - 1)
    variants = {"whole": functools.partial(_run_all, whole, chunks, whole_point)}
    # the A/A control: the whole model once more, in the same rounds, so the ratio of two
    # identical variants shows how far this machine's noise moves the ratios of this run
    variants[AGAIN] = variants["whole"]
    variants.update({p.name: functools.partial(_run_all, staged, chunks, p) for p in points})
    times = interleaved(variants, repeats=repeats, warmup=warmup)
    reference = np.concatenate([r.prediction for r in variants["whole"]()])
    # each row weighs its chunk's token count: FLOPs grow with tokens (the manifest counts them
    # at the traced length), and a padded row costs its chunk's length
    weights = np.concatenate([np.full(len(next(iter(c.values()))), _tokens(c)) for c in chunks])
    cumulative = np.asarray(flops["cumulative"], dtype=float)
    rows = []
    for p in points:
        runs = variants[p.name]()
        exits = np.concatenate([r.exit_stage for r in runs])
        pred = np.concatenate([r.prediction for r in runs])
        spent = float((cumulative[exits] * weights).sum() / (flops["whole"] * weights.sum()))
        t, w = times[p.name], times["whole"]
        rows.append(
            {
                "name": p.name,
                "thresholds": [float(v) for v in p.thresholds],
                "accuracy": float((pred == y).mean()),
                "agreement_with_whole": float((pred == reference).mean()),
                "exit_counts": np.bincount(exits, minlength=len(cumulative)).tolist(),
                "flops_fraction": spent,
                "median_ms": 1e3 * float(np.median(t)),
                "time_fraction": float(np.median(t) / np.median(w)),
                "time_fraction_paired": float(np.median(t / w)),
                "time_fraction_spread": [float(v) for v in np.percentile(t / w, [25, 75])],
            }
        )
    again = times[AGAIN] / times["whole"]
    return {
        "batch": batch,
        "chunks": len(chunks),
        "aa_ratio_paired": float(np.median(again)),
        "aa_spread": [float(v) for v in np.percentile(again, [25, 75])],
        "whole_median_ms": 1e3 * float(np.median(times["whole"])),
        "whole_accuracy": float((reference == y).mean()),
        "points": rows,
    }
