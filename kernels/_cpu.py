"""CPU fast path of the MoE FFN: group tokens by expert, run only the selected pairs, scatter back."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._common import Activation, check_moe_args, get_activation

# Two ways to run the groups. Measured here (2 cores, 2 threads, fp32; D=384, 24 experts of 64,
# 6 random experts per token; interleaved medians against the dense FFN): one batched matmul
# over zero-padded expert blocks took 0.57-0.69 of the dense time at 16-512 tokens, where a
# loop over experts took 1.2-3.4x (per-call overhead); at 1,024-2,048 tokens they tied
# (0.5-0.6); at 8,192 tokens the loop took 0.33 and the padded form 1.04 (the loop's
# per-expert gather and scatter stay in cache, the padded buffers do not). Hence: batched up to
# about 8,192 (token, expert) pairs, the loop above. Measured again through _bench.py: 128 tokens
# 0.66 of dense time, 8,192 tokens 0.33-0.34, for 0.25 of the FLOPs.
_BATCHED_MAX_PAIRS = 8192
# A guard, not a measurement: padding to the busiest expert must not more than double the work.
_BATCHED_MAX_PADDING = 2.0


class _Experts(NamedTuple):
    w1: torch.Tensor  # [E, D, H]
    w2: torch.Tensor  # [E, H, D]
    b1: torch.Tensor | None  # [E, H]
    w_up: torch.Tensor | None  # [E, D, H]
    act: Activation


def moe_grouped_cpu(
    x: torch.Tensor,
    mask: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    *,
    b1: torch.Tensor | None = None,
    b2: torch.Tensor | None = None,
    w_up: torch.Tensor | None = None,
    activation: str = "gelu",
) -> torch.Tensor:
    """Same result as `moe_reference`, but each expert only sees the tokens that selected it.

    Matmuls run in x's dtype (bfloat16 GEMMs accumulate in float32 inside); the sum over
    experts is accumulated in float32 and rounded to x's dtype once at the end.
    """
    # T=tokens, D=width, H=expert hidden, E=experts, N=selected (token, expert) pairs
    T, D, _, E = check_moe_args(x, mask, w1, w2, b1, b2, w_up)
    experts = _Experts(w1, w2, b1, w_up, get_activation(activation))
    out = torch.zeros(T, D, dtype=torch.float32, device=x.device)  # [T, D]
    if b2 is not None:
        out += b2.float()
    expert_ids, token_ids = mask.t().nonzero(as_tuple=True)  # [N], [N]: sorted by expert
    pairs = expert_ids.numel()
    if pairs == 0:
        return out.to(x.dtype)
    if T == 1:
        _run_one_token(out, x, expert_ids, experts)
        return out.to(x.dtype)
    counts = torch.bincount(expert_ids, minlength=E)  # [E] tokens per expert
    busiest = int(counts.max())
    if pairs <= _BATCHED_MAX_PAIRS and E * busiest <= _BATCHED_MAX_PADDING * pairs:
        _run_batched(out, x, expert_ids, token_ids, counts, busiest, experts)
    else:
        _run_per_expert(out, x, token_ids, counts.tolist(), experts)
    return out.to(x.dtype)


# A single token (decoding) gathers its experts' weights and runs one batched matmul. Same
# machine and FFN, 6 of 24 experts: 0.11 ms against 0.12 ms dense (0.25-0.27 ms by the loop);
# at this size the fixed cost of the call, not the FLOPs, is most of the time.
def _run_one_token(
    out: torch.Tensor, x: torch.Tensor, expert_ids: torch.Tensor, ex: _Experts
) -> None:
    """Add the selected experts' outputs for a single token x [1, D] into out [1, D]."""

    # K=experts selected for the token
    def pick(w: torch.Tensor | None) -> torch.Tensor | None:  # [E, ...] -> [K, ...]
        return None if w is None else w.index_select(0, expert_ids)

    xk = x.expand(expert_ids.numel(), 1, x.shape[1])  # [K, 1, D]
    b1 = None if ex.b1 is None else pick(ex.b1)[:, None, :]  # [K, 1, H]
    h = _hidden(xk, pick(ex.w1), b1, pick(ex.w_up), ex.act)  # [K, 1, H]
    out += torch.bmm(h, pick(ex.w2)).float().sum(dim=0)  # [K, 1, D] summed to [1, D]


def _run_per_expert(
    out: torch.Tensor, x: torch.Tensor, token_ids: torch.Tensor, counts: list[int], ex: _Experts
) -> None:
    """Add each expert's output for its own tokens into out [T, D], one expert at a time."""
    for e, tokens in enumerate(token_ids.split(counts)):  # tokens [n] of expert e
        if tokens.numel() == 0:  # no token chose this expert: its weights are never read
            continue
        xe = x.index_select(0, tokens)  # [n, D]
        b1e = None if ex.b1 is None else ex.b1[e]  # [H]
        h = _hidden(xe, ex.w1[e], b1e, None if ex.w_up is None else ex.w_up[e], ex.act)  # [n, H]
        out.index_add_(0, tokens, (h @ ex.w2[e]).float())  # [n, D] into [T, D]


def _run_batched(
    out: torch.Tensor,
    x: torch.Tensor,
    expert_ids: torch.Tensor,
    token_ids: torch.Tensor,
    counts: torch.Tensor,
    busiest: int,
    ex: _Experts,
) -> None:
    """Add all experts' outputs into out [T, D] with batched matmuls over padded token blocks."""
    # M=busiest expert's token count; expert e's tokens fill rows [e*M, e*M + count_e)
    E, D = ex.w1.shape[0], x.shape[1]
    first = torch.cumsum(counts, 0) - counts  # [E] index of each expert's first pair
    slot = expert_ids * busiest + torch.arange(expert_ids.numel()) - first[expert_ids]  # [N]
    xp = x.new_zeros(E * busiest, D).index_copy_(0, slot, x.index_select(0, token_ids))
    xp = xp.view(E, busiest, D)  # [E, M, D], zero rows are padding
    b1 = None if ex.b1 is None else ex.b1[:, None, :]  # [E, 1, H]
    h = _hidden(xp, ex.w1, b1, ex.w_up, ex.act)  # [E, M, H]
    y = torch.bmm(h, ex.w2).view(E * busiest, D)  # [E*M, D]
    out.index_add_(0, token_ids, y.index_select(0, slot).float())  # [N, D] into [T, D]


def _hidden(
    xe: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w_up: torch.Tensor | None,
    act: Activation,
) -> torch.Tensor:
    """Hidden activations act(xe W1 + b1) (* xe Wup): [n, D] -> [n, H] or [E, M, D] -> [E, M, H]."""
    h = xe @ w1
    if b1 is not None:
        h += b1
    h = act(h)
    if w_up is not None:
        h = h * (xe @ w_up)
    return h
