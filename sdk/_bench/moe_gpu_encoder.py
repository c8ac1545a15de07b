"""End to end for `moe_gpu`: a whole transformer encoder (random weights) with its FFNs dense
against the same FFNs as D2DMoE layers on the Triton kernel, so the layer's gain is seen beside
attention, norms and the router. Random weights, so time only: what quality a given FLOPs
fraction keeps on a real model is `ponder bench moe`'s question."""

from __future__ import annotations

import torch

from ponder._bench.moe_gpu_cells import _stats, dense_ffn, layer, time_variants

__all__ = ["ENCODERS", "encoder_cell"]

# name -> (width D, FFN hidden, heads, blocks, tokens per sequence, sequences per batch)
ENCODERS = {
    "bert_base_seq128": (768, 3072, 12, 12, 128, 16),  # 2,048 tokens per call
    "vit_b16_224": (768, 3072, 12, 12, 197, 16),  # 3,152 tokens per call
}
SMOKE_ENCODERS = {"tiny": (32, 256, 2, 2, 9, 3)}
ROUTER_HIDDEN = 128  # D2DMoE's router: D -> 128 -> experts (ReLU), as ponder.MoEConfig builds


class _Block(torch.nn.Module):
    """Pre-norm encoder block: attention, then the FFN dense or as experts."""

    def __init__(self, D: int, hidden: int, heads: int, expert_size: int, dtype, device):
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.norm1, self.norm2 = torch.nn.LayerNorm(D, **kw), torch.nn.LayerNorm(D, **kw)
        self.attn = torch.nn.MultiheadAttention(D, heads, batch_first=True, **kw)
        self.ffn = layer(D, hidden, expert_size, dtype, device)
        E = hidden // expert_size
        self.router = torch.nn.Sequential(
            torch.nn.Linear(D, ROUTER_HIDDEN, **kw),
            torch.nn.ReLU(),
            torch.nn.Linear(ROUTER_HIDDEN, E, **kw),
        )
        self.k = E  # experts per token, set per cell

    def forward(self, x: torch.Tensor, moe: bool) -> torch.Tensor:
        from ponder.kernels import moe_triton

        B, T, D = x.shape
        a = self.norm1(x)
        x = x + self.attn(a, a, a, need_weights=False)[0]
        h = self.norm2(x).reshape(B * T, D)  # [B*T, D]
        if not moe:
            return x + dense_ffn(h, self.ffn).reshape(B, T, D)
        # each token's top-k experts by the router's score: the cost of routing is counted
        top = self.router(h).topk(self.k, dim=1).indices  # [B*T, k]
        E = self.ffn["w1"].shape[0]
        mask = torch.zeros(B * T, E, dtype=torch.bool, device=h.device)
        mask.scatter_(1, top, True)  # [B*T, E]
        experts = {k: self.ffn[k] for k in ("w1", "w2", "b1", "b2")}
        return x + moe_triton(h, mask, **experts).reshape(B, T, D)


def encoder_cell(
    name: str, sizes: tuple, fraction: float, expert_size: int, dtype, device: str, rounds: int
) -> dict:
    """The encoder `sizes` dense and with every FFN running `fraction` of its experts: median
    time of a forward pass each, their ratio, and the FLOPs fraction of the whole encoder."""
    D, hidden, heads, blocks, seq, batch = sizes
    torch.manual_seed(0)
    stack = [_Block(D, hidden, heads, expert_size, dtype, device) for _ in range(blocks)]
    E = hidden // expert_size
    k = max(1, round(fraction * E))
    for block in stack:
        block.k = k
    x = torch.randn(batch, seq, D, device=device, dtype=dtype)

    def run(moe: bool):
        def forward():
            h = x
            for block in stack:
                h = block(h, moe)
            return h

        return forward

    with torch.inference_mode():
        times = time_variants({"dense": run(False), "moe": run(True)}, rounds, device == "cuda")
    ms = {v: _stats(t) for v, t in times.items()}
    tokens = batch * seq
    # multiply-adds per block: attention projections 4*D*D per token, scores and values
    # 2*seq*D per token, FFN 2*D*hidden dense or 2*D*k*expert_size, router D*128 + 128*E
    attn = tokens * (4 * D * D + 2 * seq * D)
    dense = attn + tokens * 2 * D * hidden
    moe = attn + tokens * (2 * D * k * expert_size + D * ROUTER_HIDDEN + ROUTER_HIDDEN * E)
    return {
        "encoder": name,
        "dtype": str(dtype).removeprefix("torch."),
        "tokens": tokens,
        "blocks": blocks,
        "E": E,
        "experts_per_token": k,
        "ffn_flops_fraction": k / E,
        "flops_fraction": moe / dense,
        "ms": ms,
        "speedup": ms["dense"]["median"] / ms["moe"]["median"],
    }
