"""Calling a model on a batch that is a tensor or a dict of keyword tensors, and reading that
batch's rows, size and token mask the same way everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ponder._core.errors import ConfigError

Inputs = torch.Tensor | Mapping[str, torch.Tensor]


def call_model(model: nn.Module, x: Inputs) -> Any:
    """`model(**x)` for keyword inputs, `model(x)` for a tensor."""
    return model(**x) if isinstance(x, Mapping) else model(x)


def take(x: Inputs, rows: slice | torch.Tensor) -> Inputs:
    """Rows of an input batch (a tensor or a dict of keyword tensors): a slice or an index
    tensor."""
    return {k: v[rows] for k, v in x.items()} if isinstance(x, Mapping) else x[rows]


def num_samples(x: Inputs) -> int:
    """The number of samples in a batch (the first dimension of its first tensor)."""
    first = next(iter(x.values())) if isinstance(x, Mapping) else x
    return int(first.shape[0])


def attention_mask(x: Inputs) -> torch.Tensor | None:
    """The HF-style `attention_mask` [B, T] (1 = real token) of keyword inputs, if any."""
    mask = x.get("attention_mask") if isinstance(x, Mapping) else None
    return mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None


def token_mask(x: Any, key: str | None) -> torch.Tensor | None:
    """The bool mask `x[key]` marking real tokens (nonzero), or None when `key` is None.

    For training and recording on text batches, where the key is the user's choice and a
    missing key or an all-padding batch is a mistake to report.
    """
    if key is None:
        return None
    if not isinstance(x, Mapping) or key not in x:
        found = sorted(x) if isinstance(x, Mapping) else type(x).__name__
        raise ConfigError(
            f"token_mask_key={key!r} needs dict batches holding that key, got {found}; "
            "pass tokenizer outputs (e.g. with 'attention_mask') or token_mask_key=None"
        )
    mask = torch.as_tensor(x[key]).bool()
    if not mask.any():
        raise ConfigError(f"a batch's {key!r} marks no real tokens; drop empty batches")
    return mask
