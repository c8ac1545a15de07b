"""D2DMoE sparsification for a sentence encoder: distil the dense model's embeddings into a copy
of it while a squared-Hoyer penalty pushes its FFN activations towards few large values.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ponder._core.errors import ConfigError, UnsupportedModelError
from ponder._core.report import format_table
from ponder._sparsity.finetune import (
    SparsityReport,
    activation_sparsity,
    cosine_distillation_loss,
    find_activations,
    sparsify_finetune,
    swap_activation_,
)
from ponder.models.text import embed, length_batches, mean_pool

__all__ = [
    "SparsityComparison",
    "compare_sparsity",
    "ffn_activation_paths",
    "mean_pool",
    "sparsify_text_encoder",
]

# BERT-like encoders (BERT, MiniLM) hold each FFN's activation here; other activations (a
# pooler's tanh is not one ponder knows, but a user's head might be) are left alone.
_FFN_SUFFIX = ".intermediate.intermediate_act_fn"


def ffn_activation_paths(model: nn.Module) -> list[str]:
    """Paths of the FFN activation modules of a BERT-like encoder (`…intermediate_act_fn`)."""
    paths = [path for path, _, _ in find_activations(model) if path.endswith(_FFN_SUFFIX)]
    if not paths:
        found = [path for path, _, _ in find_activations(model)]
        raise UnsupportedModelError(
            f"{type(model).__name__} has no BERT-like FFN activation (a module path ending in "
            f"{_FFN_SUFFIX!r}); activation modules found: {found[:8]}. For other models use "
            "ponder.sparsify_finetune(..., paths=[...]) naming the FFN activations"
        )
    return paths


def _distil_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "teacher"}
    hidden = model(**inputs).last_hidden_state.float()  # [B, T, D]
    return cosine_distillation_loss(mean_pool(hidden, inputs["attention_mask"]), batch["teacher"])


@contextlib.contextmanager
def _dropout_off(model: nn.Module) -> Iterator[None]:
    """Set every `nn.Dropout`'s p to 0 for a while (BERT's attention reads `self.dropout.p`)."""
    kept = [(m, m.p) for m in model.modules() if isinstance(m, nn.Dropout)]
    try:
        for module, _ in kept:
            module.p = 0.0
        yield
    finally:
        for module, p in kept:
            module.p = p


def sparsify_text_encoder(
    model: nn.Module,
    tokenizer: Any,
    texts: list[str],
    *,
    weight: float,
    epochs: int,
    lr: float = 2e-5,
    relu: bool = False,
    batch_size: int = 32,
    max_length: int = 128,
    progress: bool = True,
    seed: int = 0,
    dropout: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """A sparsified copy of a (dense) BERT-like sentence encoder, and its training history.

    The teacher is a frozen copy of `model`; its embeddings of `texts` (`embed`: mean pooling
    over real tokens, L2 norm) are computed once. The student, another copy (its FFN GELUs
    swapped for ReLUs first if `relu`), trains on mean(1 − cos(student, teacher)) plus
    `weight` × the squared-Hoyer penalty on its FFN activations, padding tokens excluded.
    The penalty is O(FFN width) (up to 1536 for MiniLM) while the cosine loss starts at 0, so
    useful weights are small (D2DMoE: GPT-2 5e-5 with GELU, 5e-4 with ReLU). `model` is not
    changed. The student trains without dropout unless `dropout`: the targets come from the
    eval-mode teacher, so dropout only adds noise (measured on MiniLM, 600 docstrings, 1 epoch,
    lr 1e-4, weight 1e-4: held-out mean cosine 0.985 with dropout, 0.9905 without); the
    returned student keeps its dropout settings. Returns `(student in eval mode, history)`:
    `sparsify_finetune`'s per-epoch "task_loss" (the distillation loss), "penalty" and
    "sparsity" (overall shares), "seconds" (training), plus "teacher_seconds".
    """
    if not texts or batch_size < 1 or max_length < 2:
        raise ConfigError(
            f"need at least one text, batch_size >= 1 and max_length >= 2; got {len(texts)} "
            f"texts, batch_size={batch_size}, max_length={max_length}"
        )
    device = next(model.parameters()).device
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    paths = ffn_activation_paths(teacher)
    started = time.perf_counter()
    target = embed(teacher, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    teacher_seconds = time.perf_counter() - started
    del teacher  # only its embeddings are needed from here on

    batches = []
    for idx, enc in length_batches(tokenizer, texts, batch_size, max_length, device):
        batches.append({**enc, "teacher": target[idx].to(device)})  # teacher: [B, D]
    random.Random(seed).shuffle(batches)  # lengths mixed across steps, same order each epoch

    student = copy.deepcopy(model).requires_grad_(True)
    if relu:
        swap_activation_(student, "relu", paths=paths)
        if hasattr(student, "config"):  # so that save_pretrained → from_pretrained keeps ReLU
            student.config.hidden_act = "relu"
    with contextlib.nullcontext() if dropout else _dropout_off(student):
        history = sparsify_finetune(
            student,
            batches,
            _distil_loss,
            weight=weight,
            epochs=epochs,
            lr=lr,
            progress=progress,
            seed=seed,
            paths=paths,
            token_mask_key="attention_mask",
        )
    history["teacher_seconds"] = teacher_seconds
    return student.eval(), history


@dataclass(frozen=True)
class SparsityComparison:
    """FFN activation sparsity of the dense model and of its sparsified student on the same
    texts, and how close the student's embeddings stay to the dense ones."""

    dense: SparsityReport
    student: SparsityReport
    mean_cosine: float
    min_cosine: float

    def table(self) -> str:
        """Overall figures side by side, then each model's per-FFN table."""
        names = ("hoyer_frac", "below_10", "below_100", "below_1000", "zero")
        rows = [
            [label, *(report.overall()[n] for n in names)]
            for label, report in (("dense", self.dense), ("student", self.student))
        ]
        headers = ("model", "hoyer/H", "<=max/10", "<=max/100", "<=max/1000", "==0")
        return "\n\n".join(
            [
                format_table(headers, rows),
                f"student vs dense embeddings: mean cosine {self.mean_cosine:.4f}, "
                f"min {self.min_cosine:.4f}",
                "dense:\n" + self.dense.table(),
                "student:\n" + self.student.table(),
            ]
        )


def compare_sparsity(
    dense: nn.Module,
    student: nn.Module,
    tokenizer: Any,
    texts: list[str],
    batch_size: int = 64,
    max_length: int = 128,
) -> SparsityComparison:
    """Activation sparsity (padding excluded) of both models' FFNs on `texts` (held out from
    training), and the cosine of the student's embeddings to the dense model's."""
    if not texts:
        raise ConfigError("compare_sparsity needs at least one text")
    reports = []
    for model in (dense, student):
        device = next(model.parameters()).device
        batches = [
            enc for _, enc in length_batches(tokenizer, texts, batch_size, max_length, device)
        ]
        reports.append(
            activation_sparsity(
                model, batches, token_mask_key="attention_mask", paths=ffn_activation_paths(model)
            )
        )
    cos = (
        embed(dense, tokenizer, texts, batch_size, max_length)
        * embed(student, tokenizer, texts, batch_size, max_length)
    ).sum(-1)  # [N]; both unit-norm
    return SparsityComparison(reports[0], reports[1], float(cos.mean()), float(cos.min()))
