"""The masked MoE forward that defines what every backend computes: all experts run, the mask picks."""

from __future__ import annotations

import torch

from ._common import check_moe_args, get_activation


def moe_reference(
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
    """Dynamic-k MoE FFN, computed densely for every expert and then masked.

    Layout (shared by every backend; experts stacked along the first dimension):
    x [T, D] tokens; mask [T, E] bool, True where expert e runs for token t;
    w1 [E, D, H] and b1 [E, H] (or None) the first layer; w2 [E, H, D] the second;
    b2 [D] (or None) the output bias, added once per token, not once per expert;
    w_up [E, D, H] (or None) makes the FFN gated (SwiGLU-style): h = act(x W1_e + b1_e) * (x Wup_e).

    out[t] = b2 + sum over e with mask[t, e] of h_e(x[t]) W2_e, where h_e = act(x W1_e + b1_e)
    (times x Wup_e when gated). Experts are summed without weights, so an all-True mask gives
    exactly the dense FFN whose hidden units are the experts' concatenated. A token with no
    expert gets b2 (or zeros). Computed in float32 and returned in x's dtype.
    """
    # T=tokens, D=width, H=expert hidden, E=experts
    check_moe_args(x, mask, w1, w2, b1, b2, w_up)
    act = get_activation(activation)
    xf = x.float()
    h = torch.einsum("td,edh->eth", xf, w1.float())  # [E, T, H]
    if b1 is not None:
        h = h + b1.float()[:, None, :]
    h = act(h)
    if w_up is not None:
        h = h * torch.einsum("td,edh->eth", xf, w_up.float())  # [E, T, H]
    y = torch.einsum("eth,ehd->etd", h, w2.float())  # [E, T, D]
    # where, not a multiplication, so that an inf in an unselected expert cannot leak in as NaN
    y = torch.where(mask.t()[:, :, None], y, 0.0).sum(dim=0)  # [T, D]
    if b2 is not None:
        y = y + b2.float()
    return y.to(x.dtype)
