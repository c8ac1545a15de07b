"""Training the added exit parts: heads (backbone frozen or joint), then ZTW ensembles."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ponder._config import Config, check_choice
from ponder._errors import ConfigError
from ponder._exits import ExitStack, get_stack
from ponder._infer import forward_all
from ponder._modes import kept_modes


@dataclass(frozen=True)
class TrainConfig(Config):
    """How to train exit heads.

    mode: "frozen" trains the heads on a fixed backbone (BatchNorm statistics kept, features
    computed once); "joint" trains heads and backbone together (backbone at `backbone_lr`).
    ZTW models then train their ensembles for `ensemble_epochs` with everything else fixed.
    """

    kind = "train_exits"
    mode: str = "frozen"
    epochs: int = 30
    batch_size: int = 256
    lr: float = 3e-3
    backbone_lr: float = 3e-4
    weight_decay: float = 1e-4
    ensemble_epochs: int = 20
    ensemble_lr: float = 2e-2
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        check_choice("mode", self.mode, ("frozen", "joint"))
        if min(self.epochs, self.batch_size) < 1 or self.ensemble_epochs < 0:
            raise ConfigError("epochs and batch_size must be >= 1, ensemble_epochs >= 0")
        if min(self.lr, self.backbone_lr, self.ensemble_lr) <= 0:
            raise ConfigError("learning rates must be > 0")


def train_exits(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig | None = None
) -> dict[str, Any]:
    """Train the exit heads of a converted model on (x, y); returns the loss history."""
    config = config or TrainConfig()
    stack = get_stack(model)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    history: dict[str, Any] = {"mode": config.mode}
    with kept_modes(model):
        if config.mode == "frozen":
            feats = features(model, x, config.batch_size)
            history["heads"] = _fit_heads_frozen(stack, feats, y, config)
        else:
            history["heads"] = _fit_joint(model, stack, x, y, config)
            feats = features(model, x, config.batch_size)
        if stack.ensembles is not None and config.ensemble_epochs:
            history["ensembles"] = _fit_ensembles(stack, feats, y, config)
    history["seconds"] = time.perf_counter() - started
    return history


@torch.no_grad()
def features(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> list[torch.Tensor]:
    """Pooled block features at every early exit, in eval mode: K-1 tensors [N, D_k]."""
    model.eval()
    parts = [
        forward_all(model, x[i : i + batch_size], True).feats for i in range(0, len(x), batch_size)
    ]
    return [torch.cat(per_exit) for per_exit in zip(*parts, strict=True)]


def _head_logits(stack: ExitStack, feats: list[torch.Tensor]) -> list[torch.Tensor]:
    logits, prev = [], None
    for head, f in zip(stack.heads, feats, strict=True):
        prev = head(f, prev)  # the cascade (ZTW) sees the previous head's logits, detached
        logits.append(prev)
    return logits


def _batches(n: int, batch_size: int, epochs: int, progress: bool, desc: str):
    # disable=None: tqdm stays quiet when the output is not a terminal (logs, CI)
    for _ in tqdm(range(epochs), desc=desc, disable=None if progress else True, leave=False):
        yield torch.randperm(n).split(batch_size)


def _fit_heads_frozen(stack, feats, y, config) -> list[float]:
    opt = torch.optim.AdamW(
        stack.heads.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    stack.heads.train()
    losses = []
    for order in _batches(len(y), config.batch_size, config.epochs, config.progress, "exit heads"):
        total = 0.0
        for idx in order:
            logits = _head_logits(stack, [f[idx] for f in feats])
            loss = sum(F.cross_entropy(z, y[idx]) for z in logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(y))
    return losses


def _fit_joint(model, stack, x, y, config) -> list[float]:
    head_params = {id(p) for p in stack.parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head_params and p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": list(stack.heads.parameters()), "lr": config.lr},
            {"params": backbone, "lr": config.backbone_lr},
        ],
        weight_decay=config.weight_decay,
    )
    losses = []
    for order in _batches(len(y), config.batch_size, config.epochs, config.progress, "joint"):
        model.train()
        total = 0.0
        for idx in order:
            run = forward_all(model, x[idx])
            loss = sum(F.cross_entropy(z, y[idx]) for z in [*run.head_logits, run.final_logits])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(y))
    return losses


def _fit_ensembles(stack, feats, y, config) -> list[float]:
    with torch.no_grad():
        stack.heads.eval()
        logits = _head_logits(stack, feats)  # K-1 x [N, C]
    opt = torch.optim.Adam(stack.ensembles.parameters(), lr=config.ensemble_lr)
    losses = []
    desc = "ZTW ensembles"
    for order in _batches(len(y), config.batch_size, config.ensemble_epochs, config.progress, desc):
        total = 0.0
        for idx in order:
            members = [z[idx] for z in logits]
            loss = sum(F.nll_loss(ens(members), y[idx]) for ens in stack.ensembles)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(y))
    return losses
