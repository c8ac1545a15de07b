"""Random stacked-expert weights shared by the kernel tests (pytest puts this folder on
sys.path for the test modules beside it)."""

from __future__ import annotations

import torch


def random_experts(E, D, H, *, gated=False, bias=True, seed=0) -> dict[str, torch.Tensor | None]:
    """w1, w2, b1, b2, w_up of E experts (None where absent), scaled so outputs are of order 1."""
    # D=width, H=expert hidden, E=experts
    g = torch.Generator().manual_seed(seed)
    return {
        "w1": torch.randn(E, D, H, generator=g) / D**0.5,  # [E, D, H]
        "w2": torch.randn(E, H, D, generator=g) / (E * H) ** 0.5,  # [E, H, D]
        "b1": torch.randn(E, H, generator=g) if bias else None,  # [E, H]
        "b2": torch.randn(D, generator=g) if bias else None,  # [D]
        "w_up": torch.randn(E, D, H, generator=g) / D**0.5 if gated else None,  # [E, D, H]
    }
