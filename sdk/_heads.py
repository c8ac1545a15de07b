"""Exit heads: pooling of a block's output, linear or MLP classifiers, ZTW cascade and ensemble."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ponder._errors import ConfigError


class Pool(nn.Module):
    """Turns a block output into one feature vector per sample.

    avg: feature maps [B, C, *spatial] -> mean over spatial; cls: tokens [B, T, D] -> token 0;
    last: tokens -> token T-1 (causal models); mean: tokens -> mean over T; none: already [B, D].
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "none" or h.dim() == 2:
            return h  # [B, D]
        if self.kind == "avg":
            return h.flatten(2).mean(dim=2)  # [B, C, *S] -> [B, C]
        if h.dim() != 3:
            raise ConfigError(
                f"pooling={self.kind!r} expects tokens [B, T, D], got {tuple(h.shape)}"
            )
        if self.kind == "cls":
            return h[:, 0]  # [B, D]
        return h[:, -1] if self.kind == "last" else h.mean(dim=1)  # [B, D]

    def extra_repr(self) -> str:
        return self.kind


class ExitHead(nn.Module):
    """A classifier on pooled features; with `cascade`, it also sees the previous exit's logits.

    ZTW cascading: the previous head's logits are detached and layer-normalised, then
    concatenated to the features, so later heads reuse earlier heads' work.
    """

    def __init__(self, width: int, classes: int, kind: str, hidden: int, cascade: bool):
        super().__init__()
        self.cascade_norm = nn.LayerNorm(classes) if cascade else None
        d_in = width + (classes if cascade else 0)
        if kind == "linear":
            self.net = nn.Linear(d_in, classes)
        else:
            hidden = hidden or max(width, 2 * classes)
            self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, classes))

    def forward(self, feats: torch.Tensor, prev_logits: torch.Tensor | None) -> torch.Tensor:
        # B=batch, D=feature width, C=classes
        if self.cascade_norm is not None:
            prev = self.cascade_norm(prev_logits.detach())  # [B, C]
            feats = torch.cat([feats, prev], dim=1)  # [B, D + C]
        return self.net(feats)  # [B, C]


class GeometricEnsemble(nn.Module):
    """ZTW ensemble for exit k: log_softmax(mean_i(w_i * log p_i) + b) over heads 0..k, w_i > 0."""

    def __init__(self, members: int, classes: int):
        super().__init__()
        self.log_w = nn.Parameter(torch.zeros(members))
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, logps: list[torch.Tensor]) -> torch.Tensor:
        # logps: k+1 tensors [B, C]
        stacked = torch.stack(logps[: self.log_w.numel()])  # [M, B, C]
        mixed = (self.log_w.exp()[:, None, None] * stacked).mean(dim=0) + self.bias  # [B, C]
        return F.log_softmax(mixed, dim=-1)
