"""D2DMoE step 1, sparsification: fine-tune with a squared-Hoyer penalty on the FFN activations
(optionally after a GELU → ReLU swap), and measure activation sparsity before and after.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ponder._convert.calls import token_mask
from ponder._convert.modes import kept_modes
from ponder._core.errors import ConfigError, UnsupportedModelError
from ponder._sparsity.activations import (
    activation_kind,
    find_activations,
    list_activation_kinds,
    swap_activation_,
)
from ponder._sparsity.record import (
    ActivationRecorder,
    LayerSparsity,
    SparsityReport,
    hoyer,
    sparsity_shares,
)

__all__ = [
    "ActivationRecorder",
    "LayerSparsity",
    "SparsityReport",
    "activation_kind",
    "activation_sparsity",
    "cosine_distillation_loss",
    "find_activations",
    "hoyer",
    "hoyer_penalty",
    "list_activation_kinds",
    "sparsify_finetune",
    "sparsity_shares",
    "swap_activation_",
]

Batch = Any  # a tensor, a tuple/list whose first item is the input, or a mapping of keywords
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def hoyer_penalty(recorder: ActivationRecorder) -> torch.Tensor:
    """Mean over FFNs of the mean over tokens of ‖a‖₁² / ‖a‖₂², differentiable.

    Uses (and consumes) what `recorder` (made with `keep_graph=True`) recorded since the last
    call, so each training step penalises only its own forward passes.
    """
    per_layer = [torch.cat(terms).mean() for terms in recorder.take_terms().values() if terms]
    if not per_layer:
        raise ConfigError(
            "no activations were recorded for the penalty: make the recorder with "
            "keep_graph=True and run the model's forward inside its `with` block first"
        )
    return torch.stack(per_layer).mean()


def cosine_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean of 1 − cos(student, teacher) over rows [N, D]: keep an embedding model's outputs
    pointing where the dense model's did (the task loss for sparsifying an embedding model)."""
    return (1 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()


def run_batch(model: nn.Module, batch: Batch) -> Any:
    """`model(**batch)` for a mapping, `model(batch[0])` for a tuple/list, else `model(batch)`."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, tuple | list):
        return model(batch[0])
    return model(batch)


@torch.no_grad()
def activation_sparsity(
    model: nn.Module,
    batches: Iterable[Batch],
    token_mask_key: str | None = None,
    paths: Iterable[str] | None = None,
) -> SparsityReport:
    """Activation sparsity of `model`'s FFNs over `batches`, in eval mode.

    With text, pass `token_mask_key="attention_mask"` so padding tokens are left out.
    """
    with kept_modes(model, eval_now=True), ActivationRecorder(model, paths) as recorder:
        for batch in batches:
            recorder.token_mask = token_mask(batch, token_mask_key)
            run_batch(model, batch)
    report = recorder.report()
    _check_ran(model, report)
    return report


def _check_ran(model: nn.Module, report: SparsityReport) -> None:
    if sum(layer.tokens for layer in report.layers) == 0:
        raise UnsupportedModelError(
            f"none of the activation modules of {type(model).__name__} "
            f"({[x.path for x in report.layers][:6]}) saw a token: no batches were given, the "
            "mask removed every token, or the forward applies its activations as functions"
        )


def sparsify_finetune(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: LossFn,
    *,
    weight: float,
    epochs: int,
    lr: float,
    progress: bool = True,
    seed: int = 0,
    paths: Iterable[str] | None = None,
    token_mask_key: str | None = None,
) -> dict[str, Any]:
    """Fine-tune all trainable parameters of `model` on `loss_fn(model, batch) + weight · hoyer`.

    `batches` is a list of batches, run in the order given each epoch; `loss_fn` runs the model
    and returns the task loss (for an embedding model, `cosine_distillation_loss` against the
    dense model's embeddings). D2DMoE's weights: ViT-B 0.2, GPT-2 5e-4 (ReLU) / 5e-5 (GELU).
    Returns per-epoch lists: "task_loss", "penalty" (batch means) and "sparsity" (the overall
    shares of `SparsityReport`, from the training forwards of that epoch), and "seconds".
    """
    batches = list(batches)
    if not batches or epochs < 1 or not lr > 0 or not (weight >= 0 and math.isfinite(weight)):
        raise ConfigError(
            f"need at least one batch, epochs >= 1, lr > 0 and a finite weight >= 0; got "
            f"{len(batches)} batches, epochs={epochs}, lr={lr}, weight={weight}"
        )
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    history: dict[str, Any] = {"task_loss": [], "penalty": [], "sparsity": []}
    started = time.perf_counter()
    with kept_modes(model), ActivationRecorder(model, paths, keep_graph=True) as recorder:
        model.train()
        # disable=None: tqdm stays quiet when the output is not a terminal (logs, CI)
        for _ in tqdm(range(epochs), desc="sparsify", disable=None if progress else True):
            recorder.reset()
            task, penalty = _epoch(model, batches, loss_fn, recorder, weight, opt, token_mask_key)
            history["task_loss"].append(task)
            history["penalty"].append(penalty)
            history["sparsity"].append(recorder.report().overall())
    history["seconds"] = time.perf_counter() - started
    return history


def _epoch(model, batches, loss_fn, recorder, weight, opt, token_mask_key) -> tuple[float, float]:
    """One pass over `batches`; returns the mean task loss and mean penalty per batch."""
    task_sum = penalty_sum = 0.0
    for batch in batches:
        recorder.token_mask = token_mask(batch, token_mask_key)
        task = loss_fn(model, batch)
        penalty = hoyer_penalty(recorder)
        opt.zero_grad(set_to_none=True)
        (task + weight * penalty).backward()
        opt.step()
        task_sum += float(task.detach())
        penalty_sum += float(penalty.detach())
    return task_sum / len(batches), penalty_sum / len(batches)
