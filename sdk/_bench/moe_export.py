"""`ponder bench moe-export`: does an exported MoE layer skip the work of unselected experts?
One MiniLM FFN layer exported dense, masked and grouped, timed on ONNX Runtime and ExecuTorch
(XNNPACK) at the router's real selections, against the FLOPs those selections need."""

from __future__ import annotations

import contextlib
import copy
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ponder._bench.moe import _router_batches
from ponder._bench.moe_export_programs import (
    BACKENDS,
    DenseFFN,
    ExpertFFN,
    executorch_threads,
    export_variants,
    runtime_versions,
)
from ponder._bench.moe_export_report import echo_table, plot_moe_export
from ponder._bench.moe_time import _layer_inputs, _windows
from ponder._bench.timing import interleaved, machine
from ponder._convert.convert import convert_
from ponder._convert.surgery import get_module
from ponder._core.report import write_json
from ponder._moe.config import MoEConfig, moe_layers, set_gate_
from ponder._moe.router import train_routers
from ponder.models.text import load_minilm, stdlib_docstrings

__all__ = ["run_bench_moe_export"]

DEFAULT_TOKENS = (128, 2048, 8192)  # 1, 16 and 64 sequences of 128 tokens
DEFAULT_FRACTIONS = (0.25, 0.5, 0.75)  # expert-FLOPs fractions the taus are searched for
SEQUENCE = 128  # tokens per padding-free window; T tokens are the first T rows of the windows
_SEARCH_TOKENS = 1024  # tokens the tau search runs the model on


def run_bench_moe_export(
    out: str | Path = "ponder-bench/moe-export",
    *,
    texts: int = 600,
    router_epochs: int = 20,
    tokens: Sequence[int] = DEFAULT_TOKENS,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    repeats: int = 20,
    warmup: int = 3,
    threads: int = 2,
    layer_index: int = 2,
    expert_size: int = 64,
    backends: Sequence[str] = BACKENDS,
    seed: int = 0,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Convert MiniLM to MoE, train its routers, pick taus whose selections run `fractions` of
    the expert FLOPs at layer `layer_index`, export that layer three ways to each backend, check
    the programs against eager, time them interleaved; print a table, write
    moe_export.json and moe_export.png in `out` (the programs in `out`/programs)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokens = sorted(set(tokens))
    config = {
        "texts": texts,
        "router_epochs": router_epochs,
        "tokens": tokens,
        "fractions": list(fractions),
        "repeats": repeats,
        "warmup": warmup,
        "threads": threads,
        "layer_index": layer_index,
        "expert_size": expert_size,
        "backends": list(backends),
        "seed": seed,
        "sequence": SEQUENCE,
    }
    moe, dense, tokenizer, held, data = _trained_moe(
        texts, expert_size, router_epochs, seed, progress
    )
    path = list(moe_layers(moe))[layer_index]
    windows = _windows(tokenizer, held, math.ceil(max(tokens) / SEQUENCE), SEQUENCE)
    taus = [_tau_for(moe, path, windows, f) for f in fractions]
    inputs = {}
    for tau in taus:
        set_gate_(moe, "dynamic_k", tau=tau)
        inputs[tau] = _layer_inputs(moe, path, windows)  # x [T, D], mask [T, E]
    modules = _modules(moe, dense, path)
    echo(f"exporting {list(modules)} x {list(backends)} (T dynamic up to {max(tokens)})")
    x0, mask0 = inputs[taus[0]]
    example = (x0[: min(tokens)], mask0[: min(tokens)])
    makers, programs = export_variants(
        modules, example, max(tokens), out / "programs", threads, tuple(backends)
    )
    pool = executorch_threads(threads) if "pte" in backends else contextlib.nullcontext(None)
    with pool as et_threads:
        rows, bounds = _measure(makers, modules, inputs, tokens, repeats, warmup, path)
    info = {
        **machine(),
        "backend": "ONNX Runtime (CPU EP, intra-op spinning off); ExecuTorch "
        "runtime (XNNPACK delegate)",
        "onnxruntime_intra_op_threads": threads,
        "executorch_threads": et_threads,
        **runtime_versions(),
    }
    results = {
        "config": config,
        "machine": info,
        "data": data,
        "layer": path,
        "taus": taus,
        "programs": programs,
        "rows": rows,
        "grouped_bounds": bounds,
    }
    echo_table(results, echo)
    write_json(out / "moe_export.json", results)
    plot_moe_export(out / "moe_export.png", results)
    echo(f"wrote {out / 'moe_export.json'} and {out / 'moe_export.png'}")
    return results


def _trained_moe(texts: int, expert_size: int, epochs: int, seed: int, progress: bool):
    """MiniLM and a copy converted to MoE whose routers learned on 2/3 of `texts` docstrings;
    the other third (held out) is where the layer inputs are cut from."""
    dense, tokenizer = load_minilm()
    corpus = stdlib_docstrings(max_texts=texts, seed=seed)
    random.Random(seed).shuffle(corpus)
    cut = (2 * len(corpus)) // 3
    train, held = corpus[:cut], corpus[cut:]
    moe = convert_(copy.deepcopy(dense), MoEConfig(expert_size=expert_size, seed=seed))
    batches, padding = _router_batches(tokenizer, train)
    torch.manual_seed(seed)
    losses = train_routers(
        moe, batches, epochs=epochs, progress=progress, token_mask_key="attention_mask"
    )
    held_tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in held)
    data = {
        "texts": len(corpus),
        "router_train_texts": len(train),
        "held_out_texts": len(held),
        "held_out_tokens": held_tokens,
        "router_loss_per_epoch": losses,
        "router_padding_fraction": padding,
    }
    return moe, dense, tokenizer, held, data


def _tau_for(moe: nn.Module, path: str, windows: dict[str, torch.Tensor], target: float) -> float:
    """The dynamic-k tau at which layer `path` runs `target` of its expert FLOPs (mask mean) on
    the first windows, by bisection (the fraction falls as tau grows)."""
    count = max(1, _SEARCH_TOKENS // SEQUENCE)
    sample = {k: v[:count] for k, v in windows.items()}
    lo, hi = 0.0, 1.0
    for _ in range(14):
        tau = (lo + hi) / 2
        set_gate_(moe, "dynamic_k", tau=tau)
        fraction = float(_layer_inputs(moe, path, sample)[1].float().mean())
        lo, hi = (tau, hi) if fraction > target else (lo, tau)
    return round((lo + hi) / 2, 5)


def _modules(moe: nn.Module, dense: nn.Module, path: str) -> dict[str, nn.Module]:
    """The layer three ways, each (x [T, D], mask [T, E]) -> y [T, D]. Dense is the original
    model's intermediate.dense -> activation -> output.dense (BERT), without the dropout,
    LayerNorm and residual that the MoE leaves untouched either way."""
    layer = moe_layers(moe)[path]
    first = copy.deepcopy(get_module(dense, f"{path}.dense"))
    second = copy.deepcopy(get_module(dense, path.rsplit(".", 1)[0] + ".output.dense"))
    return {
        "dense": DenseFFN(first, second, layer.activation).eval(),
        "masked": ExpertFFN(layer, "masked").eval(),
        "grouped": ExpertFFN(layer, "grouped").eval(),
    }


def _measure(makers, modules, inputs, tokens, repeats, warmup, path):
    """Per backend and T, one interleaved loop over dense, masked and grouped at every tau, and
    grouped with no expert and with every expert selected (its fixed cost and its full cost);
    each program's output is checked against eager first. Returns one row per (backend, T,
    tau) and one per (backend, T) for the grouped program's bounds."""
    rows, bounds = [], []
    taus = list(inputs)
    for backend, make in makers.items():
        for T in tokens:
            cases = {"dense": ("dense", taus[0], None)}
            for tau in taus:
                cases[f"masked {tau}"] = ("masked", tau, None)
                cases[f"grouped {tau}"] = ("grouped", tau, None)
            cases["grouped none"] = ("grouped", taus[0], False)
            cases["grouped all"] = ("grouped", taus[0], True)
            calls, errors = {}, {}
            for key, (name, tau, fill) in cases.items():
                x, mask = (t[:T] for t in inputs[tau])  # [T, D], [T, E]; contiguous row slices
                if fill is not None:
                    mask = torch.full_like(mask, fill)
                calls[key] = make[name](x, mask)
                with torch.no_grad():
                    want = modules[name](x, mask).numpy()
                errors[key] = float(np.abs(np.asarray(calls[key]()) - want).max())
            times = interleaved(calls, repeats, warmup)
            rows += [_row(backend, T, tau, inputs[tau][1][:T], times, errors) for tau in taus]
            ends = {f"{k}_experts": _bound(times, errors, k) for k in ("none", "all")}
            bounds.append({"backend": backend, "tokens": T, "layer": path, **ends})
    return rows, bounds


def _row(backend, T, tau, mask, times, errors) -> dict[str, Any]:
    """FLOPs fraction, medians, time fractions of dense (ratio of medians, and the median of
    per-round ratios), time/FLOPs, and grouped's time over its own all-experts time (how far
    the runtime skips work, whatever its kernels) for one (backend, T, tau)."""
    flops = float(mask.float().mean())
    dense = times["dense"]
    row = {
        "backend": backend,
        "tokens": T,
        "tau": tau,
        "flops_fraction": flops,
        "median_ms": {"dense": 1e3 * float(np.median(dense))},
        "max_abs_error": {"dense": errors["dense"]},
    }
    for form in ("masked", "grouped"):
        t = times[f"{form} {tau}"]
        row["median_ms"][form] = 1e3 * float(np.median(t))
        row["max_abs_error"][form] = errors[f"{form} {tau}"]
        row[f"{form}_over_dense"] = float(np.median(t) / np.median(dense))
        row[f"{form}_over_dense_paired"] = float(np.median(t / dense))
        row[f"{form}_time_over_flops"] = row[f"{form}_over_dense"] / flops
    row["grouped_over_all_experts_paired"] = float(
        np.median(times[f"grouped {tau}"] / times["grouped all"])
    )
    return row


def _bound(times, errors, which: str) -> dict[str, float]:
    t = times[f"grouped {which}"]
    return {
        "median_ms": 1e3 * float(np.median(t)),
        "over_dense_paired": float(np.median(t / times["dense"])),
        "max_abs_error": errors[f"grouped {which}"],
    }
