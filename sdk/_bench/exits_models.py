"""The backbones `ponder bench exits --model` compares exit heads on: each trained (or loaded)
per seed, with its data splits, before SDN and ZTW heads are added to copies of it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ponder._core.errors import ConfigError
from ponder.data.datasets import Splits
from ponder.data.docstrings import TextSplit, TextSplits, load_docstrings
from ponder.models.recipes import fit_recipe, load_recipe_data

BENCH_MODELS = ("mnist1d-cnn", "digits-vit", "minilm-docstrings")
# MNIST-1D's original size (Greydanus 2020): 5,000 samples; split 60/20/20 here.
DEFAULT_SAMPLES = 5000
# Width 128, not the recipe's 32: with 32 channels a block costs about as much as computing an
# exit in eager PyTorch (both ~70 µs at batch 1 here), so time could not follow FLOPs at any
# batch size; at 128 channels batch 256 follows FLOPs within ~0.07 (measured 2026-11-22).
DEFAULT_WIDTH = 128
# MiniLM's docstrings: 48 tokens hold 92% of the texts whole (median 17, 90th percentile 46).
# Splits are padded to their longest text, so the cap sets the cost: 256 texts took 2.9 s at
# 32 tokens and 6.6 s at 64 on the 2-core VM (1 thread).
DEFAULT_MAX_LENGTH = 48


@dataclass
class Prepared:
    """One seed's data splits and trained base model, and how exit heads should pool."""

    splits: Splits
    base: nn.Module
    stats: dict[str, Any]  # train_acc, test_acc, seconds of training
    pooling: str = "auto"


@dataclass
class BenchModel:
    """Builds the `Prepared` base model of each seed; `description` heads the report."""

    name: str
    description: str
    prepare: Callable[[int, bool], Prepared]
    config: dict[str, Any] = field(default_factory=dict)


def bench_model(
    name: str,
    *,
    samples: int = DEFAULT_SAMPLES,
    width: int | None = None,
    epochs: int | None = None,
    texts: int | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> BenchModel:
    """The named backbone with its options (each model reads the ones that apply to it)."""
    if name == "mnist1d-cnn":
        return _recipe_model(
            name,
            "MNIST1D_RECIPE",
            {"num_samples": samples, "width": width or DEFAULT_WIDTH},
            epochs,
            f"MNIST-1D, {samples} samples, residual 1D-CNN of width {width or DEFAULT_WIDTH}",
        )
    if name == "digits-vit":
        from ponder.models import DIGITS_VIT_RECIPE

        w = width or DIGITS_VIT_RECIPE["width"]
        overrides = {"width": w} if width else {}
        return _recipe_model(
            name,
            "DIGITS_VIT_RECIPE",
            overrides,
            epochs,
            f"digits (8x8), ViT of {DIGITS_VIT_RECIPE['num_blocks']} blocks, width {w}, from scratch",
        )
    if name == "minilm-docstrings":
        return _minilm_model(texts, max_length)
    raise ConfigError(f"Unknown bench model {name!r}; known: {', '.join(BENCH_MODELS)}.")


def _recipe_model(name, recipe_name, overrides, epochs, description) -> BenchModel:
    import ponder.models

    base_recipe = {**getattr(ponder.models, recipe_name), **overrides}
    if epochs:
        base_recipe["epochs"] = epochs

    def prepare(seed: int, progress: bool) -> Prepared:
        recipe = {**base_recipe, "seed": seed}
        torch.manual_seed(seed)
        splits = load_recipe_data(recipe)
        base, stats = fit_recipe(recipe, splits, progress)
        return Prepared(splits, base, {**stats, "recipe": recipe})

    return BenchModel(name, description, prepare, {"recipe": base_recipe})


class SentenceClassifier(nn.Module):
    """A sentence encoder, its mean pooling (L2-normalised, as all-MiniLM-L6-v2 is trained)
    and a linear head: the model's own final exit."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        from ponder.models.text import mean_pool

        # B=batch, T=tokens, D=width, C=classes
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state  # [B, T, D]
        return self.head(mean_pool(hidden, attention_mask))  # [B, D] -> [B, C]


def _minilm_model(texts: int | None, max_length: int) -> BenchModel:
    from ponder.models.text import embed, load_minilm

    if texts is not None and texts < 30:
        raise ConfigError(f"texts must be at least 30 (10 a split), got {texts}.")
    encoder, tokenizer = load_minilm()
    encoder.requires_grad_(False)
    cache: dict[str, torch.Tensor] = {}  # text -> final sentence embedding: the encoder is frozen

    def embeddings(part: TextSplit) -> torch.Tensor:
        missing = sorted(set(part.texts) - cache.keys())
        if missing:
            vectors = embed(encoder, tokenizer, missing, max_length=max_length)  # [n, D]
            cache.update(zip(missing, vectors, strict=True))
        return torch.stack([cache[t] for t in part.texts])

    def prepare(seed: int, progress: bool) -> Prepared:
        task = _limited(load_docstrings(seed=seed), texts)
        started = time.perf_counter()
        model = SentenceClassifier(encoder, task.num_classes).eval()
        train_acc = _fit_head(model.head, embeddings(task.train), task.train.labels, seed)
        seconds = time.perf_counter() - started
        with torch.no_grad():
            test_logits = model.head(embeddings(task.test))
        test_acc = float((test_logits.argmax(1) == torch.tensor(task.test.labels)).float().mean())
        splits = task.tokenize(tokenizer, max_length=max_length)
        stats = {"train_acc": train_acc, "test_acc": test_acc, "seconds": seconds}
        stats["sizes"] = [len(task.train), len(task.calib), len(task.test)]
        return Prepared(splits, model, stats, pooling="mean")

    full = load_docstrings(seed=0)
    total = len(full.train) + len(full.calib) + len(full.test)
    description = (
        f"stdlib docstrings ({full.num_classes} packages, {min(total, texts or total)} of "
        f"{total} texts, split by module), all-MiniLM-L6-v2 frozen + linear head, "
        f"max {max_length} tokens"
    )
    config = {"texts": texts, "max_length": max_length, "classes": list(full.classes)}
    return BenchModel("minilm-docstrings", description, prepare, config)


def _limited(task: TextSplits, texts: int | None) -> TextSplits:
    """Each split cut to its share of `texts` (the splits are already shuffled by the seed)."""
    if texts is None:
        return task
    parts = (task.train, task.calib, task.test)
    total = sum(map(len, parts))
    if texts >= total:
        return task
    cut = [
        TextSplit(p.texts[:n], p.labels[:n], p.modules[:n])
        for p, n in ((p, max(10, round(len(p) * texts / total))) for p in parts)
    ]
    return TextSplits(*cut, name=task.name, classes=task.classes)


def _fit_head(
    head: nn.Linear, x: torch.Tensor, labels: tuple[int, ...], seed: int, steps: int = 300
) -> float:
    """Full-batch AdamW on fixed sentence embeddings [N, D]; returns the training accuracy.

    Measured on the docstrings (seed 0, 48 tokens, the task's 1,844-text version): test
    accuracy 64.2% after 300 steps at lr 1e-2 (train 99.4%); 1,000 steps or lr 5e-2 / 2e-1 fit
    train to 100% and reach 61.7-63.9% on test.
    """
    torch.manual_seed(seed)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    y = torch.tensor(labels, dtype=torch.int64)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-4)
    with torch.enable_grad():
        for _ in range(steps):
            loss = nn.functional.cross_entropy(head(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float((head(x).argmax(1) == y).float().mean())
