"""Exit heads: pooling of a block's output, linear or MLP classifiers, ZTW cascade and ensemble."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ponder._core.errors import ConfigError


class Pool(nn.Module):
    """Turns a block output into one feature vector per sample.

    avg: feature maps [B, C, *spatial] -> mean over spatial; cls: tokens [B, T, D] -> token 0;
    last: tokens -> token T-1 (causal models); mean: tokens -> mean over T; none: already [B, D].
    With a token `mask` [B, T] (1 = real token, the HF `attention_mask`), "last" takes each
    row's last real token and "mean" averages real tokens only, so a padded row pools what it
    would pool alone; "cls" takes token 0 either way (BERT-like models pad on the right).

    Masked pooling is one batched matmul with per-token weights (`token_weights`), which depend
    on the mask alone: an exported model builds them once, in its first stage, and every later
    exit reuses them instead of rebuilding them from the mask (8 small ops per exit).
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    @property
    def reads_mask(self) -> bool:
        """Whether a token mask changes what this pooling returns."""
        return self.kind in ("mean", "last")

    def token_weights(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[B, 1, T] weights, summing to 1 per row, that make `pooled` this pooling over the real
        tokens of `mask` [B, T] (a row without real tokens pools token 0 for "last", zeros for
        "mean")."""
        real = (mask != 0).to(dtype)  # [B, T]
        if self.kind == "mean":
            weights = real / real.sum(1, keepdim=True).clamp(min=1)  # [B, T]
        else:  # the rightmost real token, for right and left padding alike
            positions = torch.arange(mask.shape[1], device=mask.device)  # [T]
            last = (positions * real).argmax(dim=1, keepdim=True)  # [B, 1]
            weights = (positions == last).to(dtype)  # [B, T]
        return weights.unsqueeze(1)  # [B, 1, T]

    def pooled(self, h: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Pool `h`; `weights` [B, 1, T] from `token_weights` (None: no mask)."""
        # B=batch, T=tokens, D=width
        if weights is not None and self.reads_mask and h.dim() == 3:
            return torch.bmm(weights.to(h.dtype), h).squeeze(1)  # [B, D]
        if self.kind == "none" or h.dim() == 2:
            return h  # [B, D]
        if self.kind == "avg":
            return h.mean(dim=tuple(range(2, h.dim())))  # [B, C, *S] -> [B, C]
        if h.dim() != 3:
            raise ConfigError(
                f"pooling={self.kind!r} expects tokens [B, T, D], got {tuple(h.shape)}"
            )
        if self.kind == "cls":
            return h[:, 0]  # [B, D]
        return h[:, -1] if self.kind == "last" else h.mean(dim=1)  # [B, D]

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        use = mask is not None and self.reads_mask and h.dim() == 3
        return self.pooled(h, self.token_weights(mask, h.dtype) if use else None)

    def extra_repr(self) -> str:
        return self.kind


class ExitHead(nn.Module):
    """A classifier on pooled features; with `cascade`, it also sees the previous exit's logits.

    Features are layer-normalised first: pooled early-block features are small (std 0.19 after
    block 1 of the MNIST-1D CNN), and without the norm a linear head reached 77.7% test accuracy
    after 30 epochs instead of 88.2%. ZTW cascading: the previous head's logits are detached
    and layer-normalised, then concatenated to the features.
    """

    def __init__(self, width: int, classes: int, kind: str, hidden: int, cascade: bool):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.cascade_norm = nn.LayerNorm(classes) if cascade else None
        d_in = width + (classes if cascade else 0)
        if kind == "linear":
            self.net = nn.Linear(d_in, classes)
        else:
            hidden = hidden or max(width, 2 * classes)
            self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, classes))

    def forward(self, feats: torch.Tensor, prev_logits: torch.Tensor | None) -> torch.Tensor:
        # B=batch, D=feature width, C=classes
        feats = self.norm(feats)  # [B, D]
        if self.cascade_norm is not None:
            prev = self.cascade_norm(prev_logits.detach())  # [B, C]
            feats = torch.cat([feats, prev], dim=1)  # [B, D + C]
        return self.net(feats)  # [B, C]


class GeometricEnsemble(nn.Module):
    """ZTW ensemble for exit k: log_softmax(mean_i(w_i * log p_i) + b) over heads 0..k, w_i > 0.

    It takes the members' logits: log p_i = z_i - logsumexp(z_i), and the logsumexp terms add
    the same number to every class, which the final log_softmax removes. So the ensemble of
    logits is exactly the ensemble of log-probabilities, one log_softmax per member cheaper
    (each op costs ~5 µs at batch 1 on CPU, more than a small head's FLOPs).
    """

    def __init__(self, members: int, classes: int):
        super().__init__()
        self.log_w = nn.Parameter(torch.zeros(members))
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, logits: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        # M=members, B=batch, C=classes, K>=M; logits: K tensors [B, C], or stacked [B, K, C]
        m = self.log_w.numel()
        if isinstance(logits, list | tuple):
            stacked = torch.stack(list(logits[:m]), 1).float()  # [B, M, C]
        else:
            stacked = (logits if logits.shape[1] == m else logits[:, :m]).float()
        weights = self.log_w.exp() / m  # [M]
        # one weighted sum over members: exported, a Mul and a ReduceSum, not M slices
        mixed = (stacked * weights[:, None]).sum(1) + self.bias  # [B, C]
        return F.log_softmax(mixed, dim=-1)
