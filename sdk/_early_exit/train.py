"""Training the added exit parts: heads (backbone frozen or joint), then ZTW ensembles."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ponder._convert.calls import Inputs, num_samples, take
from ponder._convert.modes import kept_modes
from ponder._core.config import Config, check_choice
from ponder._core.errors import ConfigError
from ponder._early_exit.infer import forward_all
from ponder._early_exit.stack import ExitStack, get_stack


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
    model: nn.Module, x: Inputs, y: torch.Tensor, config: TrainConfig | None = None
) -> dict[str, Any]:
    """Train the exit heads of a converted model on (x, y); returns the loss history.

    `x` is a tensor [N, ...] or a dict of keyword tensors with N rows each (tokenizer output)."""
    config = config or TrainConfig()
    if num_samples(x) != len(y):
        raise ConfigError(f"x has {num_samples(x)} samples but y has {len(y)} labels")
    stack = get_stack(model)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    history: dict[str, Any] = {"mode": config.mode}
    with kept_modes(model):
        if config.mode == "frozen":
            feats = features(model, x, config.batch_size, config.progress)
            history["heads"] = _fit_heads_frozen(stack, feats, y, config)
        else:
            history["heads"] = _fit_joint(model, stack, x, y, config)
            feats = features(model, x, config.batch_size, config.progress)
        if stack.ensembles is not None and config.ensemble_epochs:
            history["ensembles"] = _fit_ensembles(stack, feats, y, config)
    history["seconds"] = time.perf_counter() - started
    return history


@torch.no_grad()
def features(
    model: nn.Module, x: Inputs, batch_size: int = 512, progress: bool = False
) -> list[torch.Tensor]:
    """Pooled block features at every early exit, in eval mode: K-1 tensors [N, D_k]."""
    model.eval()
    starts = range(0, num_samples(x), batch_size)
    bar = tqdm(starts, desc="features", disable=None if progress else True, leave=False)
    parts = [forward_all(model, take(x, slice(i, i + batch_size)), True).feats for i in bar]
    return [torch.cat(per_exit) for per_exit in zip(*parts, strict=True)]


def _head_logits(stack: ExitStack, feats: list[torch.Tensor]) -> list[torch.Tensor]:
    logits, prev = [], None
    for head, f in zip(stack.heads, feats, strict=True):
        prev = head(f, prev)  # the cascade (ZTW) sees the previous head's logits, detached
        logits.append(prev)
    return logits


def _epochs(opt, loss_of, n: int, epochs: int, config: TrainConfig, desc: str) -> list[float]:
    """Minibatch steps over `epochs` shuffled passes; `loss_of(rows)` gives a batch's loss.
    Returns the mean loss of each epoch."""
    losses = []
    # disable=None: tqdm stays quiet when the output is not a terminal (logs, CI)
    for _ in tqdm(range(epochs), desc=desc, disable=None if config.progress else True, leave=False):
        total = 0.0
        for rows in torch.randperm(n).split(config.batch_size):
            loss = loss_of(rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        losses.append(total / n)
    return losses


def _fit_heads_frozen(stack, feats, y, config) -> list[float]:
    params = stack.heads.parameters()
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    stack.heads.train()

    def loss_of(rows):
        logits = _head_logits(stack, [f[rows] for f in feats])
        return sum(F.cross_entropy(z, y[rows]) for z in logits)

    return _epochs(opt, loss_of, len(y), config.epochs, config, "exit heads")


def _fit_joint(model, stack, x, y, config) -> list[float]:
    head_params = {id(p) for p in stack.parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head_params and p.requires_grad]
    groups = [
        {"params": list(stack.heads.parameters()), "lr": config.lr},
        {"params": backbone, "lr": config.backbone_lr},
    ]
    opt = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    model.train()

    def loss_of(rows):
        run = forward_all(model, take(x, rows))
        return sum(F.cross_entropy(z, y[rows]) for z in [*run.head_logits, run.final_logits])

    return _epochs(opt, loss_of, len(y), config.epochs, config, "joint")


def _fit_ensembles(stack, feats, y, config) -> list[float]:
    with torch.no_grad():
        stack.heads.eval()
        logits = _head_logits(stack, feats)  # K-1 x [N, C]
    opt = torch.optim.Adam(stack.ensembles.parameters(), lr=config.ensemble_lr)

    def loss_of(rows):
        members = [z[rows] for z in logits]
        return sum(F.nll_loss(ens(members), y[rows]) for ens in stack.ensembles)

    return _epochs(opt, loss_of, len(y), config.ensemble_epochs, config, "ZTW ensembles")
