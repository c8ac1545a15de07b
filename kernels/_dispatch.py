"""`moe_ffn`: one entry point that picks an MoE backend by device and availability."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ponder._core.errors import ConfigError
from ponder._core.registry import Registry

from ._cpu import moe_grouped_cpu
from ._reference import moe_reference
from ._traceable import moe_traceable

MoEKernel = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class _Backend:
    kernel: MoEKernel
    runs_on: Callable[[torch.Tensor], bool]  # can it run on this tensor's device (and install)?
    needs: str  # what `runs_on` asks for, for error messages


_BACKENDS: Registry[_Backend] = Registry("MoE backend")
_BACKENDS.register("reference")(_Backend(moe_reference, lambda x: True, "any device"))
_BACKENDS.register("cpu")(
    _Backend(moe_grouped_cpu, lambda x: x.device.type == "cpu", "CPU tensors")
)
# for torch.export: the exported program keeps a per-expert loop with data-dependent sizes
_BACKENDS.register("traceable")(_Backend(moe_traceable, lambda x: True, "any device"))
# The Triton GPU kernel (a later issue) registers "triton" here with
# runs_on = x.is_cuda and importlib.util.find_spec("triton") is not None, and a kernel that
# imports its module lazily, so that importing ponder.kernels never imports triton.

# "auto" takes the first of these that is registered and runs on x's device.
_PREFERENCE = ("triton", "cpu", "reference")


def list_backends() -> list[str]:
    """Names accepted by `moe_ffn(..., backend=...)`, besides "auto"."""
    return _BACKENDS.names()


def select_backend(x: torch.Tensor, backend: str = "auto") -> str:
    """The backend `moe_ffn` would use for tokens `x`; fails if a named one cannot run there."""
    if backend == "auto":
        for name in _PREFERENCE:
            if name in _BACKENDS and _BACKENDS.get(name).runs_on(x):
                return name
        raise ConfigError(f"no MoE backend runs on device {x.device}; known: {list_backends()}")
    chosen = _BACKENDS.get(backend)  # unknown name -> ConfigError listing the known ones
    if not chosen.runs_on(x):
        raise ConfigError(
            f"MoE backend {backend!r} needs {chosen.needs}, but x is on {x.device}; "
            'use backend="auto" or "reference"'
        )
    return backend


def moe_ffn(
    x: torch.Tensor,
    mask: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    *,
    b1: torch.Tensor | None = None,
    b2: torch.Tensor | None = None,
    w_up: torch.Tensor | None = None,
    activation: str = "gelu",
    backend: str = "auto",
) -> torch.Tensor:
    """Dynamic-k MoE FFN [T, D] -> [T, D] on the backend chosen by `select_backend`.

    Arguments and layout as in `moe_reference`, which defines the result; `backend` overrides
    the automatic choice (tests use it to compare backends).
    """
    kernel = _BACKENDS.get(select_backend(x, backend)).kernel
    return kernel(x, mask, w1, w2, b1=b1, b2=b2, w_up=w_up, activation=activation)
