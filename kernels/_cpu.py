"""CPU fast path of the MoE FFN: pick, per call, how to run the selected (token, expert) pairs
(grouped by expert, or masked over all tokens for experts most tokens chose); sum them up."""

from __future__ import annotations

import torch

from ._common import check_moe_args, get_activation
from ._cpu_paths import (
    Experts,
    hidden,
    run_masked_all,
    run_masked_wide,
    run_padded,
    run_per_expert,
)

# How a call runs. All figures: 2-core AMD EPYC VM, fp32, D=384, 24 experts of 64 (MiniLM's
# FFN), against the dense FFN, interleaved medians; "1 thread" = CPU time at 1 thread, which
# the shared machine allowed to measure steadily; real router masks of MiniLM layer 2.
#
# Small calls (E*T rows up to 12,288, i.e. 512 tokens of 24 experts) run batched matmuls over
# all experts at once: at 2 threads, uniform masks with 6 of 24 experts, they took 0.57-0.69 of
# the dense time at 16-512 tokens where a loop over experts took 1.2-3.4x (per-call overhead);
# at 1,024-2,048 tokens they tied. Beyond, padded buffers leave the cache: at 1,024 tokens,
# 1 thread, padding took 2.2-2.7x dense where the loop took 0.74-1.12.
_BATCHED_MAX_ROWS = 12288
# Batched either on padded blocks of each expert's gathered tokens (rows: E x busiest expert's
# count) or on all tokens masked (E x T rows, no gather or scatter): a padded row cost 1.2-1.35
# masked ones. 128 tokens, 2 threads, masked/padded against dense: at 79% of the FLOPs (busiest
# expert 122 tokens) 1.01/1.18 and 0.98/1.25 in two runs; at 48% (busiest 106) 1.04/1.03 and
# 0.98/0.96; at 20% (busiest 69) 1.02/0.70.
_PAD_ROW_COST = 1.33
# ... unless both would run more than this many rows per selected pair; then the loop. 128
# tokens, 20% of the FLOPs, 2 threads: padding to 2.7 rows per pair took 0.70-0.85 of dense,
# the loop 1.04-1.33 (1.2-1.6x as long: they would tie near 3.3-4.2 rows per pair).
_MAX_ROWS_PER_PAIR = 4.0
# Larger calls loop over experts, at most this many tokens of an expert per matmul pair, so
# that its gathered rows and outputs stay in cache. 8,192 tokens, 2 threads, at 80/51/22% of
# the FLOPs: 0.93/0.72/0.32 of dense in chunks of 2,048, 1.05/0.72/0.31 unchunked (as before
# this change: 1.03/0.72/0.32), 1.17/0.88/0.39 in chunks of 512 (two threads split the smaller
# matmuls badly; at 1 thread 512 was best: 0.89/0.67/0.27 against 1.03/0.80/0.31 unchunked).
_EXPERT_CHUNK = 2048
# Experts that more than this share of the tokens chose run over all tokens, masked, in one
# wide matmul pair (their weights copied side by side, cheap at this size). Same 8,192 tokens,
# 2 threads: at 80% of the FLOPs 0.82 of dense (0.85 with a share of 0.9, 0.93 with none); at
# 51% and 22%, 0.72 and 0.32 either way.
_WIDE_MIN_SHARE = 0.8


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
    """Same result as `moe_reference`, computed mostly on the selected (token, expert) pairs.

    Experts that most tokens chose may run over all tokens, their unselected pairs' hidden
    units set to zero before the second matmul: this spends FLOPs on pairs the mask left out
    (the result is unchanged, given finite weights) to save gathering and scattering rows.
    Matmuls run in x's dtype (bfloat16 GEMMs accumulate in float32 inside); the sum over
    experts is accumulated in float32 and rounded to x's dtype once at the end.
    """
    # T=tokens, D=width, H=expert hidden, E=experts, N=selected (token, expert) pairs
    T, D, _, E = check_moe_args(x, mask, w1, w2, b1, b2, w_up)
    experts = Experts(w1, w2, b1, w_up, get_activation(activation))
    out = torch.zeros(T + 1, D, dtype=torch.float32, device=x.device)  # [T+1, D], row T spare
    if b2 is not None:
        out[:T] += b2.float()
    counts = mask.sum(dim=0)  # [E] tokens per expert
    pairs = int(counts.sum())
    if pairs == 0:
        pass
    elif T == 1:
        _run_one_token(out, x, mask[0].nonzero().squeeze(1), experts)
    elif E * T > _BATCHED_MAX_ROWS or not _run_batched(out, x, mask, counts, pairs, experts):
        _run_loop(out, x, mask, counts, experts)
    return out[:T].to(x.dtype)


def _run_batched(
    out: torch.Tensor,
    x: torch.Tensor,
    mask: torch.Tensor,
    counts: torch.Tensor,
    pairs: int,
    ex: Experts,
) -> bool:
    """Batched matmuls over all experts, on padded blocks of gathered tokens or on all tokens
    masked, whichever runs fewer rows; returns False (and runs nothing) where both would run
    more than _MAX_ROWS_PER_PAIR rows per selected pair."""
    # T=tokens, E=experts, M=busiest expert's token count
    T, E, busiest = x.shape[0], mask.shape[1], int(counts.max())
    padded, masked = E * busiest, E * T  # rows each form runs
    if min(padded, masked) > _MAX_ROWS_PER_PAIR * pairs:
        return False
    if masked <= _PAD_ROW_COST * padded:
        run_masked_all(out[:T], x, mask, ex)
    else:
        expert_ids, token_ids = mask.t().nonzero(as_tuple=True)  # [N], [N]: sorted by expert
        run_padded(out, x, expert_ids, token_ids, counts, busiest, ex)
    return True


def _run_loop(
    out: torch.Tensor,
    x: torch.Tensor,
    mask: torch.Tensor,
    counts: torch.Tensor,
    ex: Experts,
) -> None:
    """Experts chosen by more than _WIDE_MIN_SHARE of the tokens masked over all tokens in one
    wide matmul pair; the others one by one on their own tokens, in chunks."""
    T = x.shape[0]
    wide = counts > _WIDE_MIN_SHARE * T  # [E]
    if bool(wide.any()):
        run_masked_wide(out[:T], x, mask, wide.nonzero().squeeze(1), ex)
        mask, counts = mask & ~wide, counts.masked_fill(wide, 0)
    _, token_ids = mask.t().nonzero(as_tuple=True)  # [N]: sorted by expert
    run_per_expert(out, x, token_ids, counts.tolist(), ex, _EXPERT_CHUNK)


# A single token (decoding) gathers its experts' weights and runs one batched matmul. Same
# machine and FFN, 6 of 24 experts: 0.11 ms against 0.12 ms dense (0.25-0.27 ms by the loop);
# at this size the fixed cost of the call, not the FLOPs, is most of the time.
def _run_one_token(
    out: torch.Tensor, x: torch.Tensor, expert_ids: torch.Tensor, ex: Experts
) -> None:
    """Add the selected experts' outputs for a single token x [1, D] into out [:1, D]."""

    # K=experts selected for the token
    def pick(w: torch.Tensor | None) -> torch.Tensor | None:  # [E, ...] -> [K, ...]
        return None if w is None else w.index_select(0, expert_ids)

    xk = x.expand(expert_ids.numel(), 1, x.shape[1])  # [K, 1, D]
    b1 = None if ex.b1 is None else pick(ex.b1)[:, None, :]  # [K, 1, H]
    h = hidden(xk, pick(ex.w1), b1, pick(ex.w_up), ex.act)  # [K, 1, H]
    out[:1] += torch.bmm(h, pick(ex.w2)).float().sum(dim=0)  # [K, 1, D] summed to [1, D]
