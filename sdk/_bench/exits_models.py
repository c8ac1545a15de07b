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
from ponder.models.pretrained import PooledClassifier, fit_linear
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
        # mean pooling, L2-normalised: the final embedding all-MiniLM-L6-v2 is trained for
        model = PooledClassifier(encoder, task.num_classes, "mean", normalize=True).eval()
        train_acc = fit_linear(model.head, embeddings(task.train), task.train.labels, seed=seed)
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
