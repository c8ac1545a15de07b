"""FLOPs per exit, counted from the real modules with torch.utils.flop_counter (per sample)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ponder._convert.calls import Inputs, call_model, take
from ponder._convert.modes import kept_modes
from ponder._convert.surgery import get_module
from ponder._early_exit.stack import get_stack


@dataclass(frozen=True)
class ExitCosts:
    """FLOPs for one sample (matmuls and convolutions, as FlopCounterMode counts them).

    backbone[k]: the model's own blocks up to exit k (the last entry is the whole model);
    heads[k]: exit head k (and its ensemble); full: the unconverted model.
    """

    backbone: tuple[float, ...]
    heads: tuple[float, ...]
    full: float

    @property
    def exit_costs(self) -> np.ndarray:
        """[K] cost of a sample that leaves at exit k: blocks so far plus every head so far."""
        heads = np.concatenate([np.cumsum(self.heads), [sum(self.heads)]])
        return np.asarray(self.backbone) + heads

    @property
    def head_overhead(self) -> float:
        """All early-exit heads together, as a fraction of the unconverted model."""
        return sum(self.heads) / self.full

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": list(self.backbone),
            "heads": list(self.heads),
            "full": self.full,
            "exit_costs": self.exit_costs.tolist(),
            "head_overhead": self.head_overhead,
        }


@contextlib.contextmanager
def flop_counter() -> Iterator[FlopCounterMode]:
    """torch's FlopCounterMode, with autograd off and without the fused attention fast path,
    whose kernels it does not see (TinyBert: 57,504 FLOPs counted with it, 127,392 by hand and
    without it). The one way ponder counts FLOPs, for exits and for exported stages."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            yield counter
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def module_flops(module: nn.Module, args: tuple[torch.Tensor, ...]) -> int:
    """FLOPs of one sample (the first row of every argument) through `module`."""
    with flop_counter() as counter:
        module(*(a[:1] for a in args))
    return int(counter.get_total_flops())


@torch.no_grad()
def count_costs(model: nn.Module, example_inputs: Inputs) -> ExitCosts:
    """Count FLOPs per exit on one sample of `example_inputs` (the rest of the batch is ignored)."""
    stack = get_stack(model)
    x = take(example_inputs, slice(0, 1))
    paths = [stack.spec["block_paths"][b] for b in stack.spec["exit_blocks"]]
    marks: list[int] = []
    with kept_modes(model, eval_now=True), flop_counter() as counter:
        handles = [
            get_module(model, p).register_forward_hook(
                lambda *_: marks.append(counter.get_total_flops())
            )
            for p in paths
        ]
        try:
            call_model(model, x)  # no run active: the exit hooks do nothing
        finally:
            for h in handles:
                h.remove()
        full = counter.get_total_flops()
    return ExitCosts((*tuple(map(float, marks)), float(full)), _head_flops(stack), float(full))


def _head_flops(stack) -> tuple[float, ...]:
    classes, flops = stack.spec["classes"], []
    param = next(stack.parameters())
    for k, (head, width) in enumerate(zip(stack.heads, stack.spec["widths"], strict=True)):
        feats = torch.zeros(1, width, device=param.device)
        prev = torch.zeros(1, classes, device=param.device) if k else None
        with FlopCounterMode(display=False) as counter:
            head(feats, prev)
        flops.append(float(counter.get_total_flops()))
    return tuple(flops)
