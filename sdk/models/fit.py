"""A plain supervised trainer for the built-in classifiers: AdamW, one-cycle LR, cross-entropy."""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from ponder._core.errors import ConfigError
from ponder.data.datasets import Split, Splits, batches

__all__ = ["evaluate_accuracy", "train_classifier"]


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, split: Split, batch_size: int = 1024) -> float:
    """Top-1 accuracy of `model` on `split` in eval mode; the train/eval mode is restored after."""
    was_training = model.training
    model.eval()
    correct = 0
    device = next(model.parameters()).device
    for x, y in batches(split, batch_size):
        correct += int((model(x.to(device)).argmax(dim=1).cpu() == y).sum())
    model.train(was_training)
    return correct / max(len(split), 1)


def _check(epochs: int, lr: float, batch_size: int, splits: Splits) -> None:
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}.")
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr}.")
    if not 2 <= batch_size <= len(splits.train):
        raise ConfigError(
            f"batch_size must be between 2 (batch norm needs two samples) and the training set "
            f"size {len(splits.train)}, got {batch_size}."
        )


def train_classifier(
    model: nn.Module,
    splits: Splits,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int = 0,
    weight_decay: float = 0.05,
    progress: bool = True,
) -> dict:
    """Train `model` in place on `splits.train`; return {"train_acc", "test_acc", "seconds"}.

    `seconds` is the wall-clock time of the training loop alone. The learning rate follows a
    one-cycle schedule peaking at `lr`; the last partial batch of each epoch is dropped.
    """
    from tqdm.auto import tqdm

    _check(epochs, lr, batch_size, splits)
    torch.manual_seed(seed)
    steps_per_epoch = len(splits.train) // batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.2
    )
    loss_fn = nn.CrossEntropyLoss()
    device = next(model.parameters()).device
    # disable=None: quiet when the output is not a terminal (logs, CI)
    bar = tqdm(
        total=epochs * steps_per_epoch,
        desc=f"train {splits.name}",
        disable=None if progress else True,
    )
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        loss_sum, correct, seen = 0.0, 0, 0
        for step, (x, y) in enumerate(batches(splits.train, batch_size, True, seed + epoch)):
            if step == steps_per_epoch:
                break  # drop the last partial batch
            x, y = x.to(device), y.to(device)
            logits = model(x)  # [B, num_classes]
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(dim=1) == y).sum())
            seen += len(y)
            bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    seconds = time.perf_counter() - start
    bar.close()
    if not math.isfinite(loss_sum):
        raise ConfigError(f"Training diverged (loss is {loss_sum}); lower lr (was {lr}).")
    return {
        "train_acc": evaluate_accuracy(model, splits.train),
        "test_acc": evaluate_accuracy(model, splits.test),
        "seconds": seconds,
    }
