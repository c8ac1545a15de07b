"""Running a converted model: every exit at once (evaluation), or adaptively with batch shrinking."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ponder._convert.calls import Inputs, attention_mask, call_model, num_samples, take
from ponder._core.errors import ConfigError
from ponder._core.rules import ExitRule, exit_rule, per_exit_thresholds
from ponder._early_exit.runs import AdaptiveRun, AllExited, Run
from ponder._early_exit.stack import get_stack


@dataclass(frozen=True)
class AdaptiveResult:
    """Per-sample outcome of an adaptive forward pass (B=batch, C=classes)."""

    prediction: torch.Tensor  # [B] class index
    exit_index: torch.Tensor  # [B] exit that answered; num_exits-1 is the model's own head
    logprobs: torch.Tensor  # [B, C] log-probabilities the prediction was taken from
    num_exits: int

    def exit_counts(self) -> list[int]:
        return np.bincount(self.exit_index.numpy(), minlength=self.num_exits).tolist()


@dataclass(frozen=True)
class ExitOutputs:
    """Every exit's log-probabilities for a data set: logp [K, N, C]; labels [N] when known."""

    logp: np.ndarray
    labels: np.ndarray | None = None

    def correct(self, preds: np.ndarray) -> np.ndarray:
        if self.labels is None:
            raise ConfigError("these exit outputs have no labels; pass labels to exit_outputs")
        return preds == self.labels[None, :]


def final_logits(output: Any) -> torch.Tensor:
    """The class logits [B, C] in a model's output (a tensor, a HF ModelOutput or a tuple)."""
    logits = getattr(output, "logits", None)
    if logits is None:
        logits = output[0] if isinstance(output, tuple | list) else output
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError(
            f"expected the model to return class logits [batch, classes], got {shape}"
        )
    return logits


@torch.inference_mode()
def infer(
    model: nn.Module,
    x: Inputs,
    *,
    rule: str | ExitRule = "max_prob",
    thresholds: float | Sequence[float] = 0.9,
) -> AdaptiveResult:
    """Adaptive forward pass: a sample leaves at the first exit whose rule score reaches that
    exit's threshold; the rest of the batch continues without it (no waiting for stragglers).
    Call `model.eval()` first, as for any inference."""
    stack = get_stack(model)
    if model.training:
        warnings.warn(
            "ponder.infer on a model in training mode: BatchNorm and dropout behave as in "
            "training and each sample's answer depends on the rest of the batch; call "
            "model.eval() first",
            UserWarning,
            stacklevel=2,
        )
    rule = exit_rule(rule, ensembled=stack.ensembled) if isinstance(rule, str) else rule
    run = AdaptiveRun(
        num_samples(x),
        stack.spec["classes"],
        rule,
        per_exit_thresholds(thresholds, stack.num_exits - 1),
    )
    with stack.running(run, attention_mask(x)), contextlib.suppress(AllExited):
        logits = final_logits(call_model(model, x))  # [b, C], or [B, C] where the stack restored it
        restored = logits.shape[0] == run.batch != len(run.alive)
        run.finish(logits[run.alive_index] if restored else logits)
    return AdaptiveResult(
        run.logprobs.argmax(dim=-1), torch.from_numpy(run.exit_index), run.logprobs, stack.num_exits
    )


def forward_all(model: nn.Module, x: Inputs, features_only: bool = False) -> Run:
    """One forward pass with every exit computed (keeps autograd; used for training)."""
    stack = get_stack(model)
    run = Run(num_samples(x), features_only=features_only)
    with stack.running(run, attention_mask(x)):
        logits = final_logits(call_model(model, x))
    if not features_only:
        run.exit_logps.append(torch.log_softmax(logits.float(), dim=-1))
    run.final_logits = logits
    return run


@torch.inference_mode()
def exit_outputs(
    model: nn.Module, x: Inputs, labels: torch.Tensor | None = None, batch_size: int = 512
) -> ExitOutputs:
    """Log-probabilities of every exit (the last is the model's own head) over a data set."""
    chunks = [
        torch.stack(forward_all(model, take(x, slice(i, i + batch_size))).exit_logps).numpy()
        for i in range(0, num_samples(x), batch_size)
    ]
    logp = np.concatenate(chunks, axis=1)  # [K, N, C]
    return ExitOutputs(logp, None if labels is None else labels.numpy())
