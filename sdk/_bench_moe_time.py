"""`ponder bench moe` wall-clock and plot: one converted FFN layer on the CPU fast path against
the dense FFN it came from, at the router's real selections on real MiniLM activations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ponder._moe import moe_layers, set_gate_
from ponder._plots import pyplot, save_figure
from ponder._surgery import get_module
from ponder._timing import interleaved
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
    tau: float,
    *,
    layer_index: int = 2,
    shapes: Sequence[tuple[int, int]] = ((1, 128), (64, 128)),
    repeats: int = 20,
    warmup: int = 3,
) -> list[dict[str, Any]]:
    """Median seconds of the dense FFN (BertIntermediate.dense -> activation -> output.dense of
    `dense_model`, without dropout/LayerNorm/residual, which the MoE leaves untouched either
    way) and of `moe_ffn(..., backend="cpu")` at the router's dynamic-k selections for `tau`,
    on the real inputs of MoE layer `layer_index`; interleaved in one process."""
    path = list(moe_layers(moe_model))[layer_index]
    layer = moe_layers(moe_model)[path]
    first = get_module(dense_model, f"{path}.dense")  # BERT: encoder.layer.i.intermediate
    second = get_module(dense_model, path.rsplit(".", 1)[0] + ".output.dense")
    act = get_activation(layer.activation)
    set_gate_(moe_model, "dynamic_k", tau=tau)
    batches, length = max(b for b, _ in shapes), max(s for _, s in shapes)
    x_all, mask_all = _layer_inputs(moe_model, path, _windows(tokenizer, texts, batches, length))
    rows = []
    for batch, seq in shapes:
        # sequences are padding-free, so the first batch*seq rows are whole sequences
        x, mask = x_all[: batch * seq], mask_all[: batch * seq]  # [T, D], [T, E]

        def grouped(x=x, mask=mask):
            return moe_ffn(x, mask, layer.w1, layer.w2, b1=layer.b1, b2=layer.b2,
                           activation=layer.activation, backend="cpu")  # fmt: skip

        def dense(x=x):
            return F.linear(act(F.linear(x, first.weight, first.bias)), second.weight, second.bias)

        with torch.inference_mode():
            times = interleaved({"dense": dense, "grouped": grouped}, repeats, warmup)
            error = float((grouped() - dense()).norm() / dense().norm())
        median = {name: float(np.median(t)) for name, t in times.items()}
        time_fraction = median["grouped"] / median["dense"]
        flops_fraction = float(mask.float().mean())
        rows.append({
            "batch": batch, "tokens_per_sequence": seq, "layer": path, "tau": tau,
            "median_s": median, "time_fraction": time_fraction, "flops_fraction": flops_fraction,
            "ratio": time_fraction / flops_fraction, "goal_1p3x_met": time_fraction <= 1.3 * flops_fraction,
            "relative_error_vs_dense": error, "threads": torch.get_num_threads(),
        })  # fmt: skip
    return rows


def plot_moe(path: str | Path, models: dict[str, dict[str, Any]], title: str = "") -> Path:
    """FFN FLOPs fraction against mean cosine (left) and top-1 agreement (right), one line per
    model and gate (learned dynamic-k, top-k, oracle dynamic-k), with the goal lines."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"dynamic_k": "-o", "top_k": "-s", "oracle": "--^"}
    for ax, metric, goal in ((axes[0], "cosine_mean", 0.99), (axes[1], "top1", 0.95)):
        for model_name, section in models.items():
            for curve, rows in section["sweep"].items():
                pts = sorted((r["flops_fraction"], r[metric]) for r in rows)
                ax.plot(*zip(*pts, strict=True), styles[curve], ms=3, lw=1.4,
                        label=f"{model_name} {curve}")  # fmt: skip
        ax.axhline(goal, color="grey", ls=":", lw=1, label=f"goal {goal}")
        ax.axvline(0.5, color="grey", ls="--", lw=1, label="50% FLOPs")
        ax.set(xlabel="FFN FLOPs executed / dense", ylabel=metric, xlim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].set_title("mean cosine to dense embeddings")
    axes[1].set_title("top-1 retrieval agreement with dense")
    axes[1].legend(fontsize=7, loc="lower right")
    return save_figure(fig, path, title)
