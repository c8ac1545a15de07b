"""The measurements of `moe_gpu`: one FFN layer with random weights split into experts, random
routing, and each variant (dense, masked reference, Triton) timed side by side."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

__all__ = [
    "dense_ffn",
    "fractions",
    "layer",
    "measure_cell",
    "random_mask",
    "summary",
    "tile_sweep",
]

Variant = Callable[[], object]


def layer(D: int, hidden: int, expert_size: int, dtype: torch.dtype, device: str):
    """Random stacked-expert weights of a D -> hidden -> D FFN in hidden/expert_size experts, and
    the same weights as the dense FFN's nn.Linear-shaped matrices."""
    # D=width, E=experts, H=expert_size
    E = hidden // expert_size
    g = torch.Generator(device=device).manual_seed(0)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, device=device) * scale).to(dtype)

    w = {
        "w1": rand(E, D, expert_size, scale=D**-0.5),  # [E, D, H]
        "w2": rand(E, expert_size, D, scale=hidden**-0.5),  # [E, H, D]
        "b1": rand(E, expert_size, scale=0.1),  # [E, H]
        "b2": rand(D, scale=0.1),  # [D]
    }
    # dense hidden unit e*H + j is expert e's unit j
    w["W1"] = w["w1"].permute(0, 2, 1).reshape(hidden, D).contiguous()  # [hidden, D]
    w["B1"] = w["b1"].reshape(hidden)  # [hidden]
    w["W2"] = w["w2"].reshape(hidden, D).t().contiguous()  # [D, hidden]
    return w


def dense_ffn(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    """The FFN the experts came from, as nn.Linear -> GELU -> nn.Linear computes it: [T, D]."""
    F = torch.nn.functional
    return F.linear(F.gelu(F.linear(x, w["W1"], w["B1"])), w["W2"], w["b2"])


def random_mask(T: int, E: int, fraction: float, device: str) -> torch.Tensor:
    """Each token runs round(fraction * E) experts (at least one), chosen at random: [T, E]."""
    k = max(1, round(fraction * E))
    g = torch.Generator(device=device).manual_seed(T * 1000 + k)
    chosen = torch.rand(T, E, generator=g, device=device).argsort(dim=1)[:, :k]  # [T, k]
    return torch.zeros(T, E, dtype=torch.bool, device=device).scatter_(1, chosen, True)


def _elapsed_ms(fn: Variant, n: int, cuda: bool) -> float:
    """Milliseconds per call over n back-to-back calls: CUDA events on a GPU, else the clock."""
    if not cuda:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) * 1e3 / n
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / n


def time_variants(variants: dict[str, Variant], rounds: int, cuda: bool, target_ms: float = 2.0):
    """Milliseconds per call of each variant: after a warm-up call (compiles, allocates), each
    round times every variant once over enough calls for ~target_ms, in an order that rotates."""
    names, inner = list(variants), {}
    for name in names:
        variants[name]()
        once = _elapsed_ms(variants[name], 1, cuda)
        inner[name] = max(1, min(200, int(target_ms / max(once, 1e-3))))
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(_elapsed_ms(variants[name], inner[name], cuda))
    return times


def graphed(fn: Variant) -> Variant | None:
    """fn replayed as a CUDA graph (no per-kernel launch cost), or None if capture fails."""
    try:
        fn()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph.replay
    except Exception as e:  # probing an optional capability; say why and go on without it
        print(f"  (CUDA graph capture failed: {type(e).__name__}: {e})", flush=True)
        return None


def measure_cell(w, T: int, fraction: float, rounds: int, *, triton: bool, graphs: bool = True):
    """Times of every variant on T random tokens routed to `fraction` of the experts, with the
    FLOPs fraction and the Triton outputs' largest error relative to the reference's."""
    from ponder.kernels import moe_reference, moe_triton

    # T=tokens, D=width, E=experts
    (E, D, _), dtype, device = w["w1"].shape, w["w1"].dtype, w["w1"].device.type
    x = torch.randn(T, D, generator=torch.Generator(device=device).manual_seed(T), device=device)
    x = x.to(dtype)  # [T, D]
    mask = random_mask(T, E, fraction, device)  # [T, E]
    experts = {k: w[k] for k in ("w1", "w2", "b1", "b2")}
    variants = {
        "dense": lambda: dense_ffn(x, w),
        "reference": lambda: moe_reference(x, mask, **experts),
    }
    if triton:
        variants["triton"] = lambda: moe_triton(x, mask, **experts)
        variants["triton_atomic"] = lambda: moe_triton(x, mask, **experts, merge="atomic")
    for name in ("dense", "triton") if graphs and triton and device == "cuda" else ():
        replay = graphed(variants[name])
        if replay is not None:
            variants[f"{name}_graph"] = replay
    times = time_variants(variants, rounds, device == "cuda")
    row = {"T": T, "E": E, "experts_per_token": max(1, round(fraction * E))}
    row["flops_fraction"] = mask.sum().item() / (T * E)
    row["ms"] = {name: _stats(t) for name, t in times.items()}
    if triton:
        ref = moe_reference(x, mask, **experts).float()
        for name in ("triton", "triton_atomic"):
            err = (variants[name]().float() - ref).abs().max().item()
            row[f"{name}_max_err"] = err / ref.abs().max().item()
    return row


def _stats(ms: list[float]) -> dict[str, float]:
    t = torch.tensor(ms, dtype=torch.float64)
    p25, median, p75 = torch.quantile(t, torch.tensor([0.25, 0.5, 0.75], dtype=t.dtype)).tolist()
    return {"median": median, "p25": p25, "p75": p75, "min": t.min().item(), "n": len(ms)}


def fractions(row: dict) -> dict[str, float]:
    """Each variant's median time as a fraction of the dense FFN's; the graphed Triton path as
    a fraction of the graphed dense FFN's."""
    ms = {name: s["median"] for name, s in row["ms"].items()}
    out = {name: t / ms["dense"] for name, t in ms.items() if not name.endswith("_graph")}
    if "triton_graph" in ms and "dense_graph" in ms:
        out["triton_graph"] = ms["triton_graph"] / ms["dense_graph"]
    return out


def summary(row: dict) -> str:
    """One progress line: dense time, FLOPs fraction, each variant's time fraction."""
    parts = [f"dense {row['ms']['dense']['median']:.3f} ms", f"FLOPs {row['flops_fraction']:.2f}"]
    parts += [f"{name} {value:.2f}" for name, value in fractions(row).items() if name != "dense"]
    return ", ".join(parts)


# Largest tiles (kernels/_triton.py MAX_BLOCK) tried by the sweep: M = an expert's tokens per
# program, D = output columns per step of the second layer and the merge.
SWEEP_TILES = ((32, 128), (64, 64), (64, 128), (64, 256), (128, 128))


def tile_sweep(w, tokens, rounds: int, deadline: float) -> list[dict]:
    """The Triton path at 25% of the experts under each of SWEEP_TILES, until the deadline."""
    from ponder.kernels._triton import MAX_BLOCK

    saved, rows = dict(MAX_BLOCK), []
    try:
        for m, d in SWEEP_TILES:
            for T in tokens:
                if time.perf_counter() > deadline:
                    return rows
                MAX_BLOCK.update(M=m, D=d)
                row = measure_cell(w, T, 0.25, rounds, triton=True, graphs=False)
                rows.append({"max_block": dict(MAX_BLOCK), **row})
                print(f"  tiles M={m} D={d} T={T}: {summary(row)}", flush=True)
    finally:
        MAX_BLOCK.update(saved)
    return rows
