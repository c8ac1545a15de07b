"""Wall-clock of one MoE FFN on the CPU fast path against the dense FFN it came from."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ponder._timing import interleaved, machine

from ._cpu import moe_grouped_cpu

# DESIGN.md ("Measuring performance") measured on a MiniLM-sized FFN (384 -> 1536 -> 384 as 24
# experts, 2 threads) that grouping by expert in eager PyTorch ran 25% of the FLOPs in 28% of
# the dense time at 8,192 tokens but was slower than dense at 128 tokens, where per-call
# overhead dominates: small token counts need a compiled path. `moe_grouped_cpu` now picks
# per call between batched, masked and chunked per-expert forms (see _cpu.py) to narrow that gap.


def time_dense_vs_grouped(
    tokens: int,
    width: int = 384,
    expert_hidden: int = 64,
    experts: int = 24,
    density: float = 0.25,
    *,
    threads: int = 2,
    repeats: int = 20,
    warmup: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Median seconds of the dense GELU FFN and of `moe_grouped_cpu` with `density` of the
    experts (the same number for every token, chosen at random), interleaved in one process."""
    # T=tokens, D=width, H=expert hidden, E=experts
    T, D, H, E = tokens, width, expert_hidden, experts
    g = torch.Generator().manual_seed(seed)
    w1, w2 = torch.randn(E, D, H, generator=g) / D**0.5, torch.randn(E, H, D, generator=g) / H**0.5
    b1, b2 = torch.randn(E, H, generator=g), torch.randn(D, generator=g)
    w1_dense = w1.permute(1, 0, 2).reshape(D, E * H).contiguous()  # [D, E*H]
    w2_dense, b1_dense = w2.reshape(E * H, D), b1.reshape(E * H)  # [E*H, D], [E*H]
    x = torch.randn(T, D, generator=g)  # [T, D]
    k = max(1, round(density * E))
    chosen = torch.rand(T, E, generator=g).topk(k, dim=1).indices  # [T, k]
    mask = torch.zeros(T, E, dtype=torch.bool).scatter_(1, chosen, True)  # [T, E]
    variants = {
        "dense": lambda: torch.addmm(b2, F.gelu(torch.addmm(b1_dense, x, w1_dense)), w2_dense),
        "grouped": lambda: moe_grouped_cpu(x, mask, w1, w2, b1=b1, b2=b2),
    }
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            times = interleaved(variants, repeats=repeats, warmup=warmup)
        info = machine()
    finally:
        torch.set_num_threads(previous)
    median = {name: float(np.median(t)) for name, t in times.items()}
    return {
        "tokens": T, "width": D, "expert_hidden": H, "experts": E, "experts_per_token": k,
        "median_s": median,
        "time_fraction": median["grouped"] / median["dense"],
        "flops_fraction": k / E,
        "machine": info,
    }  # fmt: skip
