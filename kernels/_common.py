"""What every MoE backend shares: the activation registry and the checks on its arguments."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ponder._core.errors import ConfigError
from ponder._core.registry import Registry

Activation = Callable[[torch.Tensor], torch.Tensor]

_ACTIVATIONS: Registry[Activation] = Registry("activation")
_ACTIVATIONS.register("relu")(F.relu)
_ACTIVATIONS.register("gelu")(F.gelu)  # exact (erf) form, as in BERT and MiniLM
_ACTIVATIONS.register("gelu_tanh")(lambda h: F.gelu(h, approximate="tanh"))  # GPT-2
_ACTIVATIONS.register("silu")(F.silu)  # gate of SwiGLU FFNs


def get_activation(name: str) -> Activation:
    """The activation function called `name`; an unknown name fails with the known ones."""
    return _ACTIVATIONS.get(name)


def list_activations() -> list[str]:
    """Names accepted by the `activation` argument of every MoE kernel."""
    return _ACTIVATIONS.names()


def check_moe_args(
    x: torch.Tensor,
    mask: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    b1: torch.Tensor | None,
    b2: torch.Tensor | None,
    w_up: torch.Tensor | None,
) -> tuple[int, int, int, int]:
    """Check the shapes of the stacked-expert layout (see `moe_reference`); return T, D, H, E."""
    # T=tokens, D=width, H=expert hidden, E=experts
    if x.dim() != 2 or w1.dim() != 3:
        raise ConfigError(
            f"x must be [T, D] and w1 [E, D, H]; got x {tuple(x.shape)}, w1 {tuple(w1.shape)}. "
            "Flatten batch and sequence dimensions into T before calling."
        )
    (T, D), (E, _, H) = x.shape, w1.shape
    expected = {
        "mask": (mask, (T, E)),
        "w1": (w1, (E, D, H)),
        "w2": (w2, (E, H, D)),
        "b1": (b1, (E, H)),
        "b2": (b2, (D,)),
        "w_up": (w_up, (E, D, H)),
    }
    for name, (t, shape) in expected.items():
        if t is not None and tuple(t.shape) != shape:
            raise ConfigError(
                f"{name} has shape {tuple(t.shape)} but x {tuple(x.shape)} and w1 "
                f"{tuple(w1.shape)} need {shape} (T=tokens, D=width, H=expert hidden, E=experts)"
            )
    if mask.dtype != torch.bool:
        raise ConfigError(f"mask must be a bool tensor [T, E]; got dtype {mask.dtype}")
    return T, D, H, E
