"""`ponder bench runtime`: the engine and policy on a real exported bundle, on CPU: latency-SLO
attainment and accuracy against the best point chosen with hindsight, decision and engine
overhead, and batch-64 throughput with per-sample exits against the full model."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ponder._bench.export_time import PROVIDER_CHAINS
from ponder._bench.runtime_model import bench_bundle, held_out
from ponder._bench.runtime_report import write_outputs
from ponder._bench.vit import VIT_S
from ponder.runtime._bundle.layout import MANIFEST

__all__ = ["run_bench_runtime"]

SLO_GOAL = 0.99  # share of requests within the latency budget


def run_bench_runtime(
    out: str | Path = "ponder-bench/runtime",
    *,
    width: int = 256,
    budgets: int = 6,
    rounds: int = 2,
    batch: int = 64,
    repeats: int = 20,
    vit: dict[str, int] | None = VIT_S,
    reuse: bool = False,
    provider: str = "cpu",
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train and export the bench bundle under `out` (or, with `reuse`, load it), profile it on
    ONNX Runtime, run every measurement, write runtime.json and runtime.png, print tables.
    vit: sizes of a ViT with random weights whose engine overhead is measured too (stages of
    milliseconds, where the digits CNN's are fractions of one); None to skip it. provider:
    "cpu", "cuda" or "tensorrt" (ONNX Runtime's execution provider; the GPU ones keep stage
    outputs on the GPU and store their own cost table)."""
    from ponder.models import DIGITS_RECIPE
    from ponder.models.recipes import load_recipe_data
    from ponder.runtime import Engine, cost_table_path
    from ponder.runtime._engine.profile import profile

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if reuse and (out / "bundle" / MANIFEST).is_file():
        path, splits = out / "bundle", load_recipe_data({**DIGITS_RECIPE, "width": width})
        echo(f"reusing {path}")
    else:
        path, splits = bench_bundle(out, width=width, progress=progress, echo=echo)
    x, y = held_out(splits)
    on = {"providers": PROVIDER_CHAINS[provider]}
    engine = Engine.load(path, "onnxruntime", costs=None, **on)
    table = profile(engine, repeats=100, warmup=10)
    table.save(cost_table_path(path, engine.backend.cost_key))
    engine = Engine.load(path, "onnxruntime", **on)
    echo(
        f"profiled {engine.backend.description}: stage medians "
        f"{[round(s.latency_ms, 3) for s in table.stages]} ms at batch 1"
    )
    results = {
        "config": {
            "model": f"digits CNN width {width}, 3 ZTW exits (trained)",
            "device": table.device,
            "backend": engine.backend.description,
            "threads": "default",
            "requests": int(len(x) * rounds),
            "batch": batch,
            "repeats": repeats,
        },
        "slo": slo_attainment(engine, x, y, budgets, rounds, echo),
        "overhead": engine_overhead(engine, x, repeats * 20),
        "throughput": throughput(engine, x, batch, repeats),
    }
    if vit is not None:
        results["overhead_vit"] = vit_overhead(out / "vit-bundle", vit, repeats, echo, on)
    write_outputs(out, results, echo)
    return results


def _serve(engine: Any, x: np.ndarray, y: np.ndarray, rounds: int, **how: Any) -> dict:
    """Every sample as its own request (batch 1), `rounds` times: wall latency per request (the
    caller's view: input checks, decision, stages, result), correctness, decision time."""
    lat, hit, decide = [], [], []
    for _ in range(rounds):
        for i in range(len(x)):
            t0 = time.perf_counter()
            r = engine.run(x[i : i + 1], **how)
            lat.append((time.perf_counter() - t0) * 1e3)
            hit.append(bool(r.prediction[0] == y[i]))
            decide.append(r.extra.get("decide_us", np.nan))
    return {"latency_ms": np.array(lat), "correct": np.array(hit), "decide_us": np.array(decide)}


def slo_attainment(engine: Any, x, y, budgets: int, rounds: int, echo) -> dict[str, Any]:
    """For budgets spread from the first stage's to the full model's request latency: the
    policy's share within budget and accuracy, against every operating point run as a fixed
    choice (the best one that meets the budget for >= 99% of requests, with hindsight)."""
    from ponder.runtime import OperatingPoint, PolicySpec

    points = [*engine.points, OperatingPoint.full(len(engine.stages) - 1)]
    fixed = [(p.name, _serve(engine, x, y, rounds, point=p)) for p in points]
    first = min(np.median(f["latency_ms"]) for _, f in fixed)
    full = np.median(fixed[-1][1]["latency_ms"])
    rows = []
    for budget in np.linspace(first, full, budgets + 1)[1:]:
        policy = engine.policy(PolicySpec.simple(latency_ms=float(budget)))
        got = _serve(engine, x, y, rounds, policy=policy)
        ok = [(name, f) for name, f in fixed if np.mean(f["latency_ms"] <= budget) >= SLO_GOAL]
        best = max(ok, key=lambda nf: nf[1]["correct"].mean(), default=(None, None))
        row = {
            "budget_ms": float(budget),
            "within": float(np.mean(got["latency_ms"] <= budget)),
            "accuracy": float(got["correct"].mean()),
            "p50_ms": float(np.median(got["latency_ms"])),
            "p99_ms": float(np.percentile(got["latency_ms"], 99)),
            "final_point": policy.current.name,
            "decide_us_median": float(np.nanmedian(got["decide_us"])),
            "decide_us_p99": float(np.nanpercentile(got["decide_us"], 99)),
            "hindsight_point": best[0],
            "hindsight_accuracy": None if best[1] is None else float(best[1]["correct"].mean()),
        }
        rows.append(row)
        echo(
            f"  budget {budget:.3f} ms: {row['within']:.1%} within, accuracy "
            f"{row['accuracy']:.2%} (hindsight best {row['hindsight_accuracy']})"
        )
    return {
        "first_stage_ms": float(first),
        "full_ms": float(full),
        "goal_within": SLO_GOAL,
        "rows": rows,
    }


def _direct(engine: Any, x1: np.ndarray) -> None:
    """The whole model through the backend's own stage calls: no exit rule, no bookkeeping."""
    backend = engine.backend
    known = {"x": backend.from_numpy(np.ascontiguousarray(x1))}
    for k, stage in enumerate(engine.bundle.manifest.stages):
        known.update(backend.run_stage(k, {t.name: known[t.name] for t in stage.inputs}))


def engine_overhead(engine: Any, x: np.ndarray, repeats: int) -> dict[str, Any]:
    """Batch 1, every stage run (no exit): engine.run against the same stage calls made
    directly, interleaved request by request; medians."""
    from ponder.runtime import OperatingPoint

    full = OperatingPoint.full(len(engine.stages) - 1)
    direct, via = [], []
    for i in range(repeats):
        x1 = x[i % len(x) : i % len(x) + 1]
        t0 = time.perf_counter()
        _direct(engine, x1)
        t1 = time.perf_counter()
        engine.run(x1, point=full)
        via.append((time.perf_counter() - t1) * 1e3)
        direct.append((t1 - t0) * 1e3)
    d, e = float(np.median(direct)), float(np.median(via))
    stages = len(engine.stages)
    return {
        "direct_ms": d,
        "engine_ms": e,
        "ratio": e / d,
        "stages": stages,
        "per_stage_us": (e - d) * 1e3 / stages,
        "repeats": repeats,
    }


def throughput(engine: Any, x: np.ndarray, batch: int, repeats: int) -> dict[str, Any]:
    """Batch `batch`: per-sample exits at the bundle's exit rule against the full model (direct
    stage calls), interleaved; time fraction beside the FLOPs fraction of where samples left."""
    m = engine.bundle.manifest
    chunks = [x[i : i + batch] for i in range(0, len(x) - batch + 1, batch)]
    full, adaptive, exits = [], [], []
    for _ in range(repeats):
        for c in chunks:
            t0 = time.perf_counter()
            _direct(engine, c)
            t1 = time.perf_counter()
            r = engine.run(c)
            adaptive.append((time.perf_counter() - t1) * 1e3)
            full.append((t1 - t0) * 1e3)
            exits.append(r.exit_stage)
    stage_flops = np.array([s.cumulative_flops for s in m.stages], dtype=float)
    flops = float(stage_flops[np.concatenate(exits)].mean() / stage_flops[-1])
    f, a = float(np.median(full)), float(np.median(adaptive))
    return {
        "batch": batch,
        "full_ms": f,
        "adaptive_ms": a,
        "time_fraction": a / f,
        "flops_fraction": flops,
        "point": engine.default_point.name,
        "samples_per_s_full": batch / f * 1e3,
        "samples_per_s_adaptive": batch / a * 1e3,
        "exit_counts": np.bincount(np.concatenate(exits), minlength=len(m.stages)).tolist(),
    }


def vit_overhead(
    path: Path, sizes: dict[str, int], repeats: int, echo, options: dict | None = None
) -> dict[str, Any]:
    """Engine against direct stage calls (batch 1, every stage) on a ViT bundle with random
    weights (ONNX only), exported into `path` unless it is there already; options go to
    Engine.load (the providers)."""
    import torch

    from ponder._bench.vit import vit_sequential
    from ponder._convert.convert import convert_
    from ponder._early_exit.config import EarlyExitConfig
    from ponder.export import export_bundle
    from ponder.runtime import Engine

    if not (path / MANIFEST).is_file():
        torch.manual_seed(0)
        blocks = sizes["blocks"]
        exits = tuple(sorted({max(1, blocks * q // 4) for q in (1, 2, 3)}))
        model = convert_(
            vit_sequential(**sizes), EarlyExitConfig(exits=exits, style="sdn", pooling="cls")
        ).eval()
        image = torch.randn(2, 3, sizes["image"], sizes["image"])
        echo(f"exporting a ViT ({sizes}, random weights, exits after blocks {exits}) to {path}")
        export_bundle(model, image, path, target="onnx", echo=lambda line: None)
    engine = Engine.load(path, "onnxruntime", **(options or {}))
    x = np.random.default_rng(0).standard_normal((4, 3, sizes["image"], sizes["image"]))
    return {"sizes": sizes, **engine_overhead(engine, x.astype(np.float32), repeats)}
