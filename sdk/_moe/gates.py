"""D2DMoE gates: turn router scores [T, E] into the bool mask of experts that run, by name.

Each gate has one runtime knob (tau, k or p) that can change without retraining the router.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ponder._core.errors import ConfigError
from ponder._core.registry import Registry

__all__ = ["GATES", "check_gate", "dynamic_k", "gate_mask", "list_gates", "top_k", "top_p"]


def dynamic_k(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """Keep expert i for a token if its score r_i >= tau * max_j r_j (D2DMoE, paper notation).

    tau lies in [0, 1] and points towards *fewer* experts: tau = 0 keeps every expert, tau = 1
    keeps only the best one (every expert tied with it). The public D2DMoE code writes the
    threshold as (1 - tau) * max, so its knob points the other way. scores [T, E] >= 0.
    """
    # T=tokens, E=experts
    best = scores.max(dim=-1, keepdim=True).values  # [T, 1]
    return scores >= tau * best  # [T, E]


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest-scoring experts of every token (all of them when k >= E)."""
    # T=tokens, E=experts
    k = min(k, scores.shape[-1])
    idx = scores.topk(k, dim=-1).indices  # [T, k]
    mask = torch.zeros_like(scores, dtype=torch.bool)  # [T, E]
    return mask.scatter_(-1, idx, True)


def top_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of highest-scoring experts whose scores reach a share p of the
    token's total score (p = 1 keeps every expert with a non-zero score; at least one is kept).
    """
    # T=tokens, E=experts
    ordered, idx = scores.sort(dim=-1, descending=True)  # [T, E]
    cum = ordered.cumsum(dim=-1)  # [T, E]
    before = cum - ordered  # share reached before each expert joins
    keep_sorted = before < p * cum[..., -1:]  # [T, E]
    keep_sorted[..., 0] = True
    return torch.zeros_like(keep_sorted).scatter_(-1, idx, keep_sorted)  # [T, E]


@dataclass(frozen=True)
class _Gate:
    fn: Callable[..., torch.Tensor]
    param: str  # the gate's one knob
    check: Callable[[float], bool]
    allowed: str  # the knob's range, for error messages


GATES: Registry[_Gate] = Registry("gate")
GATES.register("dynamic_k")(_Gate(dynamic_k, "tau", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"))
GATES.register("top_k")(
    _Gate(top_k, "k", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
)
GATES.register("top_p")(_Gate(top_p, "p", lambda v: 0.0 < v <= 1.0, "in (0, 1]"))


def list_gates() -> list[str]:
    """Names accepted by `MoEConfig(gate=...)` and `set_gate_`."""
    return GATES.names()


def check_gate(name: str, params: dict[str, float]) -> dict[str, float]:
    """Validate a gate name and its knob; returns {knob: value} with only that knob."""
    gate = GATES.get(name)  # unknown name -> ConfigError listing the known ones
    extra = sorted(set(params) - {gate.param})
    if extra or gate.param not in params:
        raise ConfigError(
            f"gate {name!r} takes exactly one parameter, {gate.param!r}; got {sorted(params)}"
        )
    value = params[gate.param]
    if isinstance(value, bool) or not isinstance(value, int | float) or not gate.check(value):
        raise ConfigError(f"gate {name!r}: {gate.param}={value!r} must be {gate.allowed}")
    return {gate.param: value}


def gate_mask(name: str, scores: torch.Tensor, params: dict[str, float]) -> torch.Tensor:
    """The bool mask [T, E] that gate `name` with knob `params` picks from scores [T, E]."""
    return GATES.get(name).fn(scores, **params)
