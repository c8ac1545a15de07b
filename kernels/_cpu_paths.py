"""The ways `moe_grouped_cpu` runs a set of experts: gathered per expert (one by one or as one
padded batch), or over all tokens with unselected pairs masked out (no gather or scatter)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._common import Activation


class Experts(NamedTuple):
    w1: torch.Tensor  # [E, D, H]
    w2: torch.Tensor  # [E, H, D]
    b1: torch.Tensor | None  # [E, H]
    w_up: torch.Tensor | None  # [E, D, H]
    act: Activation


def run_per_expert(
    out: torch.Tensor,
    x: torch.Tensor,
    token_ids: torch.Tensor,
    counts: list[int],
    ex: Experts,
    chunk: int,
) -> None:
    """Add each expert's output for its own tokens into out [T, D], one expert and at most
    `chunk` of its tokens at a time (so that the gathered rows and outputs stay in cache)."""
    # T=tokens, D=width, H=expert hidden, N=selected pairs (token_ids [N], sorted by expert)
    for e, tokens in enumerate(token_ids.split(counts)):  # tokens [n] of expert e
        if tokens.numel() == 0:  # no token chose this expert: its weights are never read
            continue
        b1e = None if ex.b1 is None else ex.b1[e]  # [H]
        w_up = None if ex.w_up is None else ex.w_up[e]  # [D, H]
        for part in tokens.split(chunk):  # [c] with c <= chunk
            xe = x.index_select(0, part)  # [c, D]
            h = hidden(xe, ex.w1[e], b1e, w_up, ex.act)  # [c, H]
            out.index_add_(0, part, (h @ ex.w2[e]).float())  # [c, D] into [T, D]


def run_padded(
    out: torch.Tensor,
    x: torch.Tensor,
    expert_ids: torch.Tensor,
    token_ids: torch.Tensor,
    counts: torch.Tensor,
    busiest: int,
    ex: Experts,
) -> None:
    """Add all experts' outputs into out [T+1, D] with batched matmuls over padded token blocks.

    One gather fills the blocks (padding rows repeat a real token, so no buffer is zeroed) and
    one index_add_ adds them back, padding rows into the spare row T of `out`."""
    # T=tokens, D=width, H=expert hidden, E=experts, N=selected pairs, M=busiest expert's
    # token count; expert e's tokens fill rows [e*M, e*M + count_e)
    T, D, E = x.shape[0], x.shape[1], ex.w1.shape[0]
    first = torch.cumsum(counts, 0) - counts  # [E] index of each expert's first pair
    slot = expert_ids * busiest + torch.arange(expert_ids.numel()) - first[expert_ids]  # [N]
    row = torch.full((E * busiest,), T, dtype=torch.long).index_copy_(0, slot, token_ids)
    xp = x.index_select(0, row.clamp(max=T - 1)).view(E, busiest, D)  # [E, M, D]
    b1 = None if ex.b1 is None else ex.b1[:, None, :]  # [E, 1, H]
    h = hidden(xp, ex.w1, b1, ex.w_up, ex.act)  # [E, M, H]
    out.index_add_(0, row, torch.bmm(h, ex.w2).view(E * busiest, D).float())  # into [T+1, D]


def run_masked_all(out: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, ex: Experts) -> None:
    """Add every expert's output over all tokens, with unselected pairs' hidden units set to
    zero, into out [T, D]: batched matmuls on the stacked weights, so nothing is copied but h."""
    # T=tokens, D=width, H=expert hidden, E=experts
    (T, D), (E, _, H) = x.shape, ex.w1.shape
    xe = x.expand(E, T, D)  # [E, T, D], a view
    b1 = None if ex.b1 is None else ex.b1[:, None, :]  # [E, 1, H]
    h = hidden(xe, ex.w1, b1, ex.w_up, ex.act)  # [E, T, H]
    h.masked_fill_(~mask.t()[:, :, None], 0)  # where, not a product: inf * 0 would be NaN
    _add_matmul(out, h.transpose(0, 1).reshape(T, E * H), ex.w2.reshape(E * H, D))  # [T, D]


def run_masked_wide(
    out: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, chosen: torch.Tensor, ex: Experts
) -> None:
    """Add the `chosen` experts' outputs over all tokens, unselected pairs masked, into out
    [T, D] as one wide matmul pair; their weights are copied side by side first."""
    # T=tokens, D=width, H=expert hidden, S=chosen experts
    (T, D), H, S = x.shape, ex.w1.shape[2], chosen.numel()

    def side_by_side(w: torch.Tensor) -> torch.Tensor:  # [E, D, H] -> [D, S*H]
        return w.index_select(0, chosen).permute(1, 0, 2).reshape(D, S * H)

    b1 = None if ex.b1 is None else ex.b1.index_select(0, chosen).reshape(S * H)  # [S*H]
    w_up = None if ex.w_up is None else side_by_side(ex.w_up)
    h = hidden(x, side_by_side(ex.w1), b1, w_up, ex.act)  # [T, S*H]
    h.view(T, S, H).masked_fill_(~mask.index_select(1, chosen)[:, :, None], 0)
    _add_matmul(out, h, ex.w2.index_select(0, chosen).reshape(S * H, D))  # [T, D]


def _add_matmul(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """out += a @ b, accumulated in out's float32 (in place when a and b are float32 too)."""
    if a.dtype == out.dtype:
        out.addmm_(a, b)
    else:
        out += (a @ b).float()


def hidden(
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
