"""A ViT-S/16-sized encoder as an `nn.Sequential` (patch embedding, pre-norm blocks, head), so
that ponder's Sequential export can cut it into stages. Random weights: it is for timing."""

from __future__ import annotations

import torch
from torch import nn

from ponder.models.vit import ViTBlock

__all__ = ["Head", "PatchEmbed", "vit_sequential"]


class PatchEmbed(nn.Module):
    """Image -> patch tokens, a class token in front, learned position embeddings."""

    def __init__(self, image: int, patch: int, width: int, channels: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(channels, width, patch, stride=patch)
        tokens = (image // patch) ** 2 + 1
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, tokens, width) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # B=batch, P=patches, T=P+1 tokens, D=width
        patches = self.proj(x).flatten(2).transpose(1, 2)  # [B, P, D]
        cls = self.cls.expand(x.shape[0], -1, -1)  # [B, 1, D]
        return torch.cat([cls, patches], dim=1) + self.pos  # [B, T, D]


class Head(nn.Module):
    """Final norm, class token, linear classifier."""

    def __init__(self, width: int, classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x)[:, 0])  # [B, T, D] -> [B, C]


# ViT-S/16: the defaults of vit_sequential, as keyword arguments
VIT_S = {"blocks": 12, "width": 384, "heads": 6, "image": 224, "patch": 16, "classes": 1000}


def vit_sequential(
    *,
    blocks: int = 12,
    width: int = 384,
    heads: int = 6,
    image: int = 224,
    patch: int = 16,
    classes: int = 1000,
    seed: int = 0,
) -> nn.Sequential:
    """[patch embedding, `blocks` transformer blocks, head]; the defaults are ViT-S/16 (197
    tokens, 22M parameters). Child i (1..blocks) is transformer block i, child 0 the embedding."""
    torch.manual_seed(seed)
    return nn.Sequential(
        PatchEmbed(image, patch, width),
        *(ViTBlock(width, heads, mlp_ratio=4) for _ in range(blocks)),
        Head(width, classes),
    ).eval()
