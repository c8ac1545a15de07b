"""Measuring an MoE-converted encoder against its dense model: FFN FLOPs actually executed (the
gates' masks over real tokens), embedding cosine, nearest-neighbour retrieval agreement."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ponder._moe.config import moe_layers, set_gate_
from ponder._moe.router import expert_norms
from ponder.models.text import embed

__all__ = [
    "expert_usage",
    "oracle_routers",
    "quality_at_flops",
    "retrieval_agreement",
    "sweep",
]


def expert_usage(mask: torch.Tensor, attention_mask: torch.Tensor) -> tuple[int, int]:
    """(experts that ran, experts that could have run) over the real tokens of one forward.

    mask [T, E] is an MoEFFN's `last_mask` for the batch flattened to T = B*S tokens;
    attention_mask [B, S] marks real tokens (1) and padding (0). FFN FLOPs scale linearly with
    the experts run (all experts are the same size), so used / possible is the FLOPs fraction.
    """
    # B=batch, S=sequence, T=B*S tokens, E=experts
    real = attention_mask.reshape(-1).bool()  # [T]
    if real.numel() != mask.shape[0]:
        raise ValueError(f"mask has {mask.shape[0]} tokens, attention_mask {real.numel()}")
    return int(mask[real].sum()), int(real.sum()) * mask.shape[1]


def retrieval_agreement(moe: torch.Tensor, dense: torch.Tensor, k: int = 5) -> dict[str, float]:
    """How often nearest-neighbour search over the same texts finds what the dense model finds.

    moe, dense: unit-norm embeddings [N, D] of the same N texts; each text queries the other
    N-1. top1: the MoE nearest neighbour is the dense one. top{k}: the dense nearest neighbour
    is among the MoE k nearest. overlap{k}: mean share of the dense k-NN set in the MoE k-NN set.
    """

    # N=texts, k=neighbours
    def neighbours(e: torch.Tensor) -> torch.Tensor:
        sims = e @ e.T  # [N, N]
        sims.fill_diagonal_(-float("inf"))
        return sims.topk(k, dim=1).indices  # [N, k]

    nn_moe, nn_dense = neighbours(moe.float()), neighbours(dense.float())
    shared = (nn_moe[:, :, None] == nn_dense[:, None, :]).any(-1).sum(1)  # [N]
    return {
        "top1": float((nn_moe[:, 0] == nn_dense[:, 0]).float().mean()),
        f"top{k}": float((nn_moe == nn_dense[:, :1]).any(1).float().mean()),
        f"overlap{k}": float(shared.float().mean() / k),
    }


class _OracleRouter(nn.Module):
    """Scores every expert by its true output norm (what the learned router tries to predict)."""

    def __init__(self, norms: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.norms = norms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norms(x)  # [T, D] -> [T, E]


@contextlib.contextmanager
def oracle_routers(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every MoEFFN routes by its experts' true output norms."""
    layers = list(moe_layers(model).values())
    learned = [layer.router for layer in layers]
    for layer in layers:
        layer.router = _OracleRouter(functools.partial(expert_norms, layer))
    try:
        yield model
    finally:
        for layer, router in zip(layers, learned, strict=True):
            layer.router = router


@contextlib.contextmanager
def _usage_meter(model: nn.Module) -> Iterator[dict[str, list[int]]]:
    """Counts (used, possible) experts per MoE layer over real tokens of every forward."""
    layers = moe_layers(model)
    counts = {path: [0, 0] for path in layers}
    seen: dict[str, torch.Tensor] = {}

    def grab_mask(module, args, kwargs):
        seen["attention_mask"] = kwargs["attention_mask"]

    def count(path: str):
        def hook(module, args, output):
            used, possible = expert_usage(module.last_mask, seen["attention_mask"])
            counts[path][0] += used
            counts[path][1] += possible

        return hook

    handles = [model.register_forward_pre_hook(grab_mask, with_kwargs=True)]
    handles += [layer.register_forward_hook(count(p)) for p, layer in layers.items()]
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def _measure(model, tokenizer, texts, reference: torch.Tensor) -> dict[str, Any]:
    with _usage_meter(model) as counts:
        emb = embed(model, tokenizer, texts)
    per_layer = [used / possible for used, possible in counts.values()]
    cosine = (emb * reference).sum(-1)  # [N], both unit-norm
    return {
        "flops_fraction": sum(u for u, _ in counts.values()) / sum(p for _, p in counts.values()),
        "cosine_mean": float(cosine.mean()),
        "cosine_p05": float(cosine.quantile(0.05)),
        **retrieval_agreement(emb, reference),
        "per_layer_flops_fraction": per_layer,
    }


def sweep(
    model: nn.Module,
    tokenizer: Any,
    texts: list[str],
    reference: torch.Tensor,
    taus: Sequence[float],
    ks: Sequence[int],
    progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Quality and FFN FLOPs of `model` (MoE-converted, routers trained) on `texts` against
    `reference` embeddings: learned dynamic-k over `taus`, top-k over `ks`, oracle over `taus`."""
    from tqdm.auto import tqdm

    settings = [("dynamic_k", "tau", t) for t in taus] + [("top_k", "k", k) for k in ks]
    settings += [("oracle", "tau", t) for t in taus]
    rows: dict[str, list[dict[str, Any]]] = {"dynamic_k": [], "top_k": [], "oracle": []}
    for curve, knob, value in tqdm(settings, desc="gate sweep", disable=None if progress else True):
        set_gate_(model, "top_k" if curve == "top_k" else "dynamic_k", **{knob: value})
        with oracle_routers(model) if curve == "oracle" else contextlib.nullcontext():
            rows[curve].append({knob: value, **_measure(model, tokenizer, texts, reference)})
    return rows


def quality_at_flops(rows: Sequence[dict[str, Any]], fraction: float, metric: str) -> float | None:
    """`metric` linearly interpolated at FFN FLOPs `fraction` along one curve of `sweep`; None
    outside the FLOPs range the curve covers."""
    x = np.array([r["flops_fraction"] for r in rows])
    y = np.array([r[metric] for r in rows])
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if len(x) == 0 or not x[0] <= fraction <= x[-1]:
        return None
    return float(np.interp(fraction, x, y))
