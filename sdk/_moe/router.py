"""D2DMoE step 3: train each MoEFFN's router by regression on the L2 norm of every expert's
output, captured while all experts run, with the backbone frozen.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ponder._convert.calls import call_model, token_mask
from ponder._convert.modes import kept_modes
from ponder._core.errors import ConfigError
from ponder._moe.config import MoEFFN, _require_moe, all_experts
from ponder._moe.split import ExpertWeights, expert_outputs

__all__ = ["expert_norms", "router_loss", "train_routers"]

# Tokens per chunk when computing every expert's output ([chunk, E, D] floats at once): 1,024
# tokens of a MiniLM FFN (24 experts, width 384) is 38 MB.
_CHUNK = 1024


@torch.no_grad()
def expert_norms(layer: MoEFFN, tokens: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each expert's output for tokens [T, D]: [T, E], the routers' target."""
    experts = ExpertWeights(layer.w1, layer.b1, layer.w2, layer.w_up, layer.neuron_index)
    parts = [
        expert_outputs(chunk, experts, layer.activation).norm(dim=-1)  # [t, E]
        for chunk in tokens.split(_CHUNK)
    ]
    return torch.cat(parts)  # [T, E]


@torch.no_grad()
def _capture(model: nn.Module, x: Any, keep: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Each MoEFFN's input tokens [T, D] (detached) during one all-experts forward of `x`;
    with `keep` (e.g. an attention mask [B, S]) only the tokens where it is True."""
    seen: dict[str, torch.Tensor] = {}

    def grab(path: str):
        def hook(module, args):
            # B=batch, S=sequence, D=width; MoEFFN flattens [B, S, D] row-major to [B*S, D],
            # so the mask flattened the same way picks the same tokens.
            inp = args[0].detach()
            tokens = inp.reshape(-1, inp.shape[-1])  # [B*S, D]
            if keep is not None:
                if tuple(inp.shape[:-1]) != tuple(keep.shape):
                    raise ConfigError(
                        f"token mask of shape {tuple(keep.shape)} does not match the input "
                        f"{tuple(inp.shape)} of the MoE layer at {path!r}; the mask must have "
                        "the shape of the layer's input without its last (width) dimension"
                    )
                tokens = tokens[keep.reshape(-1).to(inp.device)]  # [T, D], T = real tokens
            seen[path] = tokens

        return hook

    layers = _require_moe(model)
    handles = [layer.register_forward_pre_hook(grab(p)) for p, layer in layers.items()]
    try:
        with all_experts(model):
            call_model(model, x)
    finally:
        for h in handles:
            h.remove()
    return seen


def router_loss(model: nn.Module, x: Any, token_mask_key: str | None = None) -> torch.Tensor:
    """Mean over MoEFFNs of the MSE between predicted and true expert-output norms on batch
    `x` (a tensor or a dict of keyword tensors); gradients reach the routers only. With
    `token_mask_key` (e.g. "attention_mask") only tokens where `x[token_mask_key]` is nonzero
    count; the mask still reaches the model as an input."""
    layers = _require_moe(model)
    tokens = _capture(model, x, token_mask(x, token_mask_key))
    losses = [
        F.mse_loss(layers[p].router(t), expert_norms(layers[p], t)) for p, t in tokens.items()
    ]
    return torch.stack(losses).mean()


def train_routers(
    model: nn.Module,
    inputs: Iterable[Any],
    epochs: int = 1,
    lr: float = 1e-3,
    progress: bool = True,
    token_mask_key: str | None = None,
) -> list[float]:
    """Train every router of `model` in place with Adam on `router_loss` over `inputs` (an
    iterable of batches, read once per epoch); the backbone stays frozen and in eval mode.
    `token_mask_key` names the mask in dict batches (e.g. "attention_mask" of tokenizer
    outputs) whose zero entries (padding) are left out; None fits every token.
    Returns the mean loss of each epoch."""
    from tqdm.auto import tqdm

    if epochs < 1 or not lr > 0:
        raise ConfigError(f"need epochs >= 1 and lr > 0, got epochs={epochs}, lr={lr}")
    routers = [layer.router for layer in _require_moe(model).values()]
    opt = torch.optim.Adam([p for r in routers for p in r.parameters()], lr=lr)
    history = []
    with kept_modes(model, eval_now=True):
        # disable=None: tqdm stays quiet when the output is not a terminal (logs, CI)
        bar = tqdm(range(epochs), desc="train routers", disable=None if progress else True)
        for _ in bar:
            total, batches = 0.0, 0
            for x in inputs:
                loss = router_loss(model, x, token_mask_key)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, batches = total + float(loss.detach()), batches + 1
            if batches == 0:
                raise ConfigError("train_routers got no batches; pass a non-empty iterable")
            history.append(total / batches)
            bar.set_postfix(loss=f"{history[-1]:.4g}")
    if not math.isfinite(history[-1]):
        raise ConfigError(f"router training diverged (loss {history[-1]}); lower lr (was {lr})")
    return history
