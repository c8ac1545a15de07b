"""`ponder bench moe` wall-clock and plot: one converted FFN layer on the CPU fast path against
the dense FFN it came from, at the router's real selections on real MiniLM activations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ponder._bench.timing import interleaved
from ponder._convert.surgery import get_module
from ponder._core.plots import pyplot, save_figure
from ponder._moe.config import moe_layers, set_gate_
from ponder.kernels import get_activation, moe_ffn

__all__ = ["plot_moe", "time_layer"]


def _windows(tokenizer: Any, texts: list[str], count: int, length: int) -> dict[str, torch.Tensor]:
    """`count` padding-free sequences of `length` tokens ([CLS] text… [SEP]), cut from the
    texts joined end to end (cycled if they are too few)."""
    ids = [i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
    body = length - 2
    need = count * body
    ids = (ids * (need // len(ids) + 1))[:need]
    rows = torch.tensor(ids).reshape(count, body)  # [B, S-2]
    cls = torch.full((count, 1), tokenizer.cls_token_id)
    sep = torch.full((count, 1), tokenizer.sep_token_id)
    input_ids = torch.cat([cls, rows, sep], dim=1)  # [B, S]
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


@torch.no_grad()
def _layer_inputs(model: nn.Module, path: str, batch: dict[str, torch.Tensor]):
    """The MoEFFN at `path`: its input tokens [T, D] and the experts it ran [T, E] on `batch`."""
    layer = moe_layers(model)[path]
    seen = {}
    handle = layer.register_forward_pre_hook(
        lambda m, args: seen.update(x=args[0].reshape(-1, args[0].shape[-1]))
    )
    try:
        model(**batch)
    finally:
        handle.remove()
    return seen["x"], layer.last_mask


def time_layer(
    moe_model: nn.Module,
    dense_model: nn.Module,
    tokenizer: Any,
    texts: list[str],
    taus: Sequence[float],
    *,
    layer_index: int = 2,
    shapes: Sequence[tuple[int, int]] = ((1, 128), (64, 128)),
    repeats: int = 20,
    warmup: int = 3,
) -> list[dict[str, Any]]:
    """Median seconds of the dense FFN (BertIntermediate.dense -> activation -> output.dense of
    `dense_model`, without dropout/LayerNorm/residual, which the MoE leaves untouched either
    way) and of `moe_ffn(..., backend="cpu")` at the router's dynamic-k selections for each of
    `taus`, on the real inputs of MoE layer `layer_index`; interleaved in one process. One row
    per tau and shape: the kernel's time fraction against its FLOPs fraction."""
    path = list(moe_layers(moe_model))[layer_index]
    layer = moe_layers(moe_model)[path]
    first = get_module(dense_model, f"{path}.dense")  # BERT: encoder.layer.i.intermediate
    second = get_module(dense_model, path.rsplit(".", 1)[0] + ".output.dense")
    act = get_activation(layer.activation)

    def dense(x: torch.Tensor) -> torch.Tensor:
        return F.linear(act(F.linear(x, first.weight, first.bias)), second.weight, second.bias)

    def grouped(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return moe_ffn(
            x,
            mask,
            layer.w1,
            layer.w2,
            b1=layer.b1,
            b2=layer.b2,
            activation=layer.activation,
            backend="cpu",
        )

    batches, length = max(b for b, _ in shapes), max(s for _, s in shapes)
    batch = _windows(tokenizer, texts, batches, length)
    rows = []
    for tau in taus:
        set_gate_(moe_model, "dynamic_k", tau=tau)
        x_all, mask_all = _layer_inputs(moe_model, path, batch)
        for b, seq in shapes:
            # sequences are padding-free, so the first b*seq rows are whole sequences
            x, mask = x_all[: b * seq], mask_all[: b * seq]  # [T, D], [T, E]
            timing = _time_pair(dense, grouped, x, mask, repeats, warmup)
            rows.append(
                {"batch": b, "tokens_per_sequence": seq, "layer": path, "tau": tau, **timing}
            )
    return rows


def _time_pair(
    dense: Callable[[torch.Tensor], torch.Tensor],
    grouped: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    mask: torch.Tensor,
    repeats: int,
    warmup: int,
) -> dict[str, Any]:
    """Interleaved medians of both on tokens x [T, D] and experts mask [T, E], the time and
    FLOPs fractions, and grouped's error against dense."""
    with torch.inference_mode():
        variants = {"dense": lambda: dense(x), "grouped": lambda: grouped(x, mask)}
        times = interleaved(variants, repeats, warmup)
        reference = dense(x)
        error = float((grouped(x, mask) - reference).norm() / reference.norm())
    median = {name: float(np.median(t)) for name, t in times.items()}
    time_fraction = median["grouped"] / median["dense"]
    flops_fraction = float(mask.float().mean())
    return {
        "median_s": median,
        "time_fraction": time_fraction,
        "flops_fraction": flops_fraction,
        "ratio": time_fraction / flops_fraction,
        "goal_1p3x_met": time_fraction <= 1.3 * flops_fraction,
        "relative_error_vs_dense": error,
        "threads": torch.get_num_threads(),
    }


def plot_moe(
    path: str | Path,
    models: dict[str, dict[str, Any]],
    title: str = "",
    wallclock: Sequence[dict[str, Any]] = (),
) -> Path:
    """FFN FLOPs fraction against mean cosine (left) and top-1 agreement (middle), one line per
    model and gate (learned dynamic-k, top-k, oracle dynamic-k), with the goal lines; and the
    timed layer's time fraction against its FLOPs fraction (right), one line per model and shape."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    styles = {"dynamic_k": "-o", "top_k": "-s", "oracle": "--^"}
    for ax, metric, goal in ((axes[0], "cosine_mean", 0.99), (axes[1], "top1", 0.95)):
        for model_name, section in models.items():
            for curve, rows in section["sweep"].items():
                pts = sorted((r["flops_fraction"], r[metric]) for r in rows)
                ax.plot(
                    *zip(*pts, strict=True),
                    styles[curve],
                    ms=3,
                    lw=1.4,
                    label=f"{model_name} {curve}",
                )
        ax.axhline(goal, color="grey", ls=":", lw=1, label=f"goal {goal}")
        ax.axvline(0.5, color="grey", ls="--", lw=1, label="50% FLOPs")
        ax.set(xlabel="FFN FLOPs executed / dense", ylabel=metric, xlim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].set_title("mean cosine to dense embeddings")
    axes[1].set_title("top-1 retrieval agreement with dense")
    axes[1].legend(fontsize=7, loc="lower right")
    _plot_time(axes[2], wallclock)
    return save_figure(fig, path, title)


def _plot_time(ax: Any, wallclock: Sequence[dict[str, Any]]) -> None:
    """Time fraction against FLOPs fraction of the timed layer, with the 1x and 1.3x lines."""
    lines: dict[str, list[tuple[float, float]]] = {}
    for r in wallclock:
        key = f"{r['model']} {r['batch']}x{r['tokens_per_sequence']}"
        lines.setdefault(key, []).append((r["flops_fraction"], r["time_fraction"]))
    for key, pts in lines.items():
        ax.plot(*zip(*sorted(pts), strict=True), "-o", ms=3, lw=1.4, label=key)
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="time = FLOPs")
    ax.plot([0, 1], [0, 1.3], color="grey", ls=":", lw=1, label="goal: 1.3x FLOPs")
    ax.set(xlabel="FLOPs of the layer / dense", ylabel="time / dense", xlim=(0, 1.02))
    ax.set_title("one FFN layer on the CPU kernel")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
