"""`ponder bench moe`: all-MiniLM-L6-v2 turned into dynamic-k mixtures of experts (D2DMoE) —
FFN FLOPs executed against embedding quality over the gate's knob, dynamic-k against top-k at
equal FLOPs, the oracle gate, and the wall-clock of one converted FFN layer on CPU."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ponder._bench.moe_eval import quality_at_flops, sweep
from ponder._bench.moe_time import plot_moe, time_layer
from ponder._bench.timing import machine
from ponder._convert.convert import convert_
from ponder._core.report import format_table, write_json
from ponder._moe.config import MoEConfig, moe_layers
from ponder._moe.router import train_routers
from ponder.models.text import (
    embed,
    length_batches,
    load_minilm,
    remove_near_duplicates,
    stdlib_docstrings,
)

__all__ = ["run_bench_moe"]

# τ in [0, 1], towards fewer experts. Dense near 0: with an oracle gate MiniLM needed 93% of
# its experts for a mean cosine of 0.992 (DESIGN.md, "Measuring performance").
DEFAULT_TAUS = (0.0, 0.02, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
EQUAL_FLOPS = (0.3, 0.5, 0.7)
GOAL = {"max_flops_fraction": 0.5, "min_cosine": 0.99, "min_top1": 0.95}
_ROUTER_BATCH = 16
# The wall-clock times this FFN layer at the operating τ and at τs giving it these FLOPs
# fractions, so the table shows the kernel's time against FLOPs over the range.
_TIMED_LAYER = 2
_TIMING_FLOPS = (0.25, 0.5, 0.75)


def run_bench_moe(
    out: str | Path = "ponder-bench/moe",
    *,
    texts: int = 600,
    expert_size: int = 64,
    taus: Sequence[float] = DEFAULT_TAUS,
    router_epochs: int = 20,
    seed: int = 0,
    repeats: int = 20,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    sparsified_model: tuple[torch.nn.Module, Any] | None = None,
) -> dict[str, Any]:
    """Run the MoE benchmark on MiniLM (and on `sparsified_model`, a Hoyer-fine-tuned MiniLM
    given as `(model, tokenizer)`, if any); print tables, write moe.json and moe.png in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "texts": texts,
        "expert_size": expert_size,
        "taus": list(taus),
        "router_epochs": router_epochs,
        "seed": seed,
        "repeats": repeats,
    }
    dense, tokenizer = load_minilm()
    data = _split(dense, tokenizer, texts, seed)
    echo(
        f"{data['texts']} docstrings: {data['train_texts']} train the routers, "
        f"{data['eval_texts_before_dedup']} held out, {data['near_duplicates_removed']} near-duplicates "
        f"(dense cosine > 0.95) removed -> {data['eval_texts']} evaluation texts"
    )
    candidates = {"minilm": (dense, tokenizer)}
    if sparsified_model is not None:
        candidates["sparsified"] = sparsified_model
    models, converted = {}, {}
    for name, (model, tok) in candidates.items():
        models[name], converted[name] = _one_model(
            model, tok, data, expert_size, taus, router_epochs, seed, progress
        )
        _echo_model(name, models[name], echo)
    results = {
        "config": config,
        "machine": machine(),
        "goal": GOAL,
        "data": _public(data),
        "models": models,
    }
    results["wallclock"] = _wallclock(models, converted, candidates, data, repeats)
    _echo_wallclock(results["wallclock"], results["machine"], echo)
    write_json(out / "moe.json", results)
    plot_moe(
        out / "moe.png",
        models,
        f"all-MiniLM-L6-v2 as MoE ({expert_size}-neuron experts)",
        results["wallclock"],
    )
    echo(f"wrote {out / 'moe.json'} and {out / 'moe.png'}")
    return results


def _split(dense, tokenizer, texts: int, seed: int) -> dict[str, Any]:
    """Docstrings split 2/3 router training, 1/3 held out; near-duplicates dropped from the
    held-out texts under the dense model, whose embeddings of the rest are the reference."""
    corpus = stdlib_docstrings(max_texts=texts, seed=seed)
    random.Random(seed).shuffle(corpus)
    cut = (2 * len(corpus)) // 3
    train, held = corpus[:cut], corpus[cut:]
    kept, _, removed = remove_near_duplicates(held, embed(dense, tokenizer, held), 0.95)
    return {
        "texts": len(corpus),
        "train_texts": len(train),
        "eval_texts_before_dedup": len(held),
        "near_duplicates_removed": removed,
        "eval_texts": len(kept),
        "train": train,
        "eval": kept,
        "reference": embed(dense, tokenizer, kept),
    }


def _public(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in ("train", "eval", "reference")}


def _router_batches(tokenizer, texts: list[str]) -> tuple[list[dict[str, torch.Tensor]], float]:
    """Tokenized batches of similar-length texts, and the share of padding tokens in them.

    `train_routers` leaves padding out (token_mask_key="attention_mask"); texts are still
    grouped by length so little of each forward is spent on padding."""
    batches = [
        b for _, b in length_batches(tokenizer, texts, _ROUTER_BATCH, 128, torch.device("cpu"))
    ]
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    total = sum(b["attention_mask"].numel() for b in batches)
    return [dict(b) for b in batches], 1 - real / total


def _one_model(model, tokenizer, data, expert_size, taus, epochs, seed, progress):
    """Convert a copy of `model`, train its routers, sweep the gates; quality is measured
    against the original dense MiniLM's embeddings (data["reference"])."""
    own_dense = embed(model, tokenizer, data["eval"])
    moe = convert_(copy.deepcopy(model), MoEConfig(expert_size=expert_size, seed=seed))
    batches, padding = _router_batches(tokenizer, data["train"])
    torch.manual_seed(seed)
    losses = train_routers(
        moe, batches, epochs=epochs, progress=progress, token_mask_key="attention_mask"
    )
    experts = next(iter(moe_layers(moe).values())).num_experts
    rows = sweep(
        moe, tokenizer, data["eval"], data["reference"], taus, range(1, experts + 1), progress
    )
    section = {
        "experts_per_ffn": experts,
        "dense_cosine_to_reference": float((own_dense * data["reference"]).sum(-1).mean()),
        "router_loss_per_epoch": losses,
        "router_padding_fraction": padding,
        "sweep": rows,
        "equal_flops": _equal_flops(rows),
        "goal": _goal(rows),
    }
    return section, moe


def _equal_flops(rows: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Learned dynamic-k against top-k (and the oracle) at the same FFN FLOPs fractions."""
    table = []
    for fraction in EQUAL_FLOPS:
        for metric in ("cosine_mean", "top1"):
            q = {curve: quality_at_flops(rows[curve], fraction, metric) for curve in rows}
            ahead = None
            if q["dynamic_k"] is not None and q["top_k"] is not None:
                ahead = "dynamic_k" if q["dynamic_k"] > q["top_k"] else "top_k"
            table.append({"flops_fraction": fraction, "metric": metric, **q, "ahead": ahead})
    return table


def _goal(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per gate: the cheapest measured setting with mean cosine >= 0.99, and whether the goal
    (<= 50% FFN FLOPs there, with top-1 agreement >= 95%) is met."""
    result = {}
    for curve, curve_rows in rows.items():
        ok = [r for r in curve_rows if r["cosine_mean"] >= GOAL["min_cosine"]]
        best = min(ok, key=lambda r: r["flops_fraction"], default=None)
        met = any(
            r["flops_fraction"] <= GOAL["max_flops_fraction"] and r["top1"] >= GOAL["min_top1"]
            for r in ok
        )
        result[curve] = {"cheapest_at_cosine_0.99": best, "goal_met": met}
    return result


def _timing_taus(rows: list[dict[str, Any]], layer_index: int) -> tuple[float, list[float]]:
    """The operating point (the learned dynamic-k τ whose FLOPs fraction over all layers is
    nearest 50%) and the τs to time: it and, interpolated along the sweep, the τs that give
    the timed layer about 25%, 50% and 75% of its FLOPs (clamped to the swept range)."""
    operating = min(rows, key=lambda r: abs(r["flops_fraction"] - 0.5))["tau"]
    pts = sorted((r["per_layer_flops_fraction"][layer_index], r["tau"]) for r in rows)
    fractions, taus = zip(*pts, strict=True)
    curve = {round(float(np.interp(f, fractions, taus)), 3) for f in _TIMING_FLOPS}
    return operating, sorted(curve | {operating})


def _wallclock(models, converted, candidates, data, repeats) -> list[dict[str, Any]]:
    rows = []
    texts = data["train"] + data["eval"]
    for name, moe in converted.items():
        dense, tokenizer = candidates[name]
        operating, taus = _timing_taus(models[name]["sweep"]["dynamic_k"], _TIMED_LAYER)
        timed = time_layer(
            moe, dense, tokenizer, texts, taus, layer_index=_TIMED_LAYER, repeats=repeats
        )
        rows += [{"model": name, **r, "operating_point": r["tau"] == operating} for r in timed]
    return rows


def _echo_model(name: str, section: dict[str, Any], echo) -> None:
    echo(
        f"\n[{name}] {section['experts_per_ffn']} experts per FFN; router loss "
        f"{section['router_loss_per_epoch'][0]:.4g} -> {section['router_loss_per_epoch'][-1]:.4g}, "
        f"{section['router_padding_fraction']:.1%} of router-training tokens were padding (excluded); "
        f"dense model's cosine to MiniLM {section['dense_cosine_to_reference']:.4f}"
    )
    headers = ["gate", "knob", "FLOPs", "cos mean", "cos p05", "top1", "top5", "overlap5"]
    rows = []
    for curve, curve_rows in section["sweep"].items():
        for r in curve_rows:
            knob = f"k={r['k']}" if "k" in r else f"tau={r['tau']}"
            rows.append(
                [
                    curve,
                    knob,
                    r["flops_fraction"],
                    r["cosine_mean"],
                    r["cosine_p05"],
                    r["top1"],
                    r["top5"],
                    r["overlap5"],
                ]
            )
    echo(format_table(headers, rows))
    echo(
        "top5 = the dense nearest neighbour is among the MoE 5 nearest; overlap5 = shared share "
        "of the two 5-NN sets. FLOPs = FFN FLOPs executed / dense, over real tokens and layers."
    )
    echo("\nequal FFN FLOPs (linear interpolation along each curve; '-' = outside its range):")
    eq = [
        [
            r["flops_fraction"],
            r["metric"],
            *(_f(r[c]) for c in ("dynamic_k", "top_k", "oracle")),
            r["ahead"] or "-",
        ]
        for r in section["equal_flops"]
    ]
    echo(format_table(["FLOPs", "metric", "dynamic_k", "top_k", "oracle", "ahead"], eq))
    echo(
        f"\ngoal: <= {GOAL['max_flops_fraction']:.0%} FFN FLOPs at mean cosine >= {GOAL['min_cosine']} "
        f"and top-1 >= {GOAL['min_top1']:.0%}"
    )
    goal_rows = []
    for curve, g in section["goal"].items():
        b = g["cheapest_at_cosine_0.99"]
        cells = ["-", "-", "-"] if b is None else [b["flops_fraction"], b["cosine_mean"], b["top1"]]
        goal_rows.append([curve, *cells, "met" if g["goal_met"] else "NOT met"])
    echo(format_table(["gate", "lowest FLOPs @cos>=0.99", "cos", "top1", "goal"], goal_rows))


def _f(value: float | None) -> object:
    return "-" if value is None else value


def _echo_wallclock(rows: list[dict[str, Any]], info: dict[str, Any], echo) -> None:
    echo(
        f"\none FFN layer (layer {_TIMED_LAYER}), dense (intermediate.dense -> activation -> output.dense of "
        f"the original model) vs ponder.kernels.moe_ffn(backend='cpu') at the router's dynamic-k selections, "
        f"on real layer inputs of padding-free 128-token sequences, at several tau (* = the operating point, "
        f"~50% FLOPs over all layers); interleaved medians; {info['cpu']}, {info['cores']} cores, "
        f"torch {info['torch']}"
    )
    table = [
        [
            r["model"],
            f"{r['batch']}x{r['tokens_per_sequence']}",
            f"{r['tau']}{'*' if r['operating_point'] else ''}",
            r["flops_fraction"],
            r["time_fraction"],
            r["ratio"],
            "yes" if r["goal_1p3x_met"] else "no",
            r["threads"],
            r["median_s"]["dense"] * 1e3,
            r["median_s"]["grouped"] * 1e3,
        ]
        for r in sorted(rows, key=lambda r: (r["model"], r["batch"], r["tau"]))
    ]
    headers = [
        "model",
        "batch",
        "tau",
        "FLOPs frac",
        "time frac",
        "time/FLOPs",
        "<=1.3x",
        "threads",
        "dense ms",
        "grouped ms",
    ]
    echo(format_table(headers, table))
