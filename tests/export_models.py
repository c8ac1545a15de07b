"""Converted tiny models for the export tests (ZTW CNN; MoE MLP with an SDN exit)."""

from __future__ import annotations

import torch
from tiny_models import make
from torch import nn

import ponder


def ztw_cnn() -> nn.Module:
    """The tiny 2-D CNN with two ZTW exits (cascading heads and ensembles), heads randomised
    so that every head's output matters."""
    model = make("conv2d")
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=2, style="ztw"))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.ponder_exits.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def moe_mlp() -> nn.Module:
    """A ReLU/GELU MLP made an MoE (dynamic-k, 4 experts of 8 per FFN) with one SDN exit."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 12)),
        nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 12)),
        nn.Linear(12, 5),
    )
    ponder.convert_(model, ponder.MoEConfig(expert_size=8, tau=0.3))
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=1))
    return model.eval()
