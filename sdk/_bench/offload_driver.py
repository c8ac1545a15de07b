"""What both models of `ponder bench offload` go through: a split copy measured (payload bytes per
sample and the model's own quality function), token selection by both selectors, and split
fine-tuning over the compressed link with the bytes both ways; each model brings its quality
function (MiniLM: cosine to the unsplit embedding; ViT: accuracy) and its loss."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ponder._convert.convert import convert_
from ponder._split.config import SplitConfig
from ponder._split.link import SplitLink
from ponder._split.program import SplitModel, split_model

SELECTORS = ("cls", "received")
SELECTION_CODECS = ("int8", "int4-g32")
# fine-tuned after the last split block, with the better selector there: (keep, codec)
FINE_TUNED = ((0.5, "int8"), (0.25, "int4-g32"))

Echo = Callable[[str], None]
# one epoch's training batches in a fresh shuffled order: (keyword inputs, target)
Batches = Callable[[], Iterable[tuple[dict[str, torch.Tensor], torch.Tensor]]]


@dataclass(frozen=True)
class SplitBench:
    """One model under the bench. `quality(model)` scores a split copy on the test set (called
    without gradients); its key `score` ranks the selectors; `example` holds keyword inputs to
    cut the model on; `name` and `each` word the progress lines ("digits ViT ", "an image")."""

    model: nn.Module
    example: dict[str, torch.Tensor]
    quality: Callable[[nn.Module], dict[str, float]]
    score: str
    zstd_level: int
    name: str = ""
    each: str = "a text"


def measure(model: nn.Module, link: SplitLink, quality: Callable) -> dict[str, float]:
    """Payload bytes per sample over `link` while `quality(model)` runs, and its figures."""
    link.bytes.reset()
    with torch.no_grad():
        found = quality(model)
    sent = np.asarray(link.bytes.sent)
    return {"bytes_mean": float(sent.mean()), "bytes_median": float(np.median(sent)), **found}


def label(c: SplitConfig) -> str:
    kept = "every token" if c.keep == 1 else f"keep {c.keep:g} by {c.selector}"
    return f"block {c.block}, {kept}, {c.codec}"


def ratios(every_token: list[dict], rows: Iterable[dict], key: str, input_bytes: float) -> None:
    """Each row's bytes against fp32 activations of every token (same block), and against the
    input itself under `key` ("times_the_text": `input_bytes` of text a sample)."""
    for row in rows:
        fp32 = next(
            (r for r in every_token if r["block"] == row["block"] and r["codec"] == "fp32"), None
        )
        row["ratio_vs_fp32"] = fp32["bytes_mean"] / row["bytes_mean"] if fp32 else None
        row[key] = row["bytes_mean"] / input_bytes


def select_tokens(
    bench: SplitBench, blocks: Sequence[int], keeps: Sequence[float], echo: Echo | None
) -> list[dict[str, Any]]:
    """Token selection rows: both selectors through the first selection codec at every keep;
    then the better one (higher mean score over the keeps, per block) through the others."""
    rows: list[dict[str, Any]] = []

    def run(block: int, keep: float, selector: str, codec: str) -> None:
        config = SplitConfig(
            block=block, keep=keep, selector=selector, codec=codec, zstd_level=bench.zstd_level
        )
        model = _split_copy(bench, config)
        rows.append(_row(config, measure(model, model.link, bench.quality)))
        if echo:
            echo(f"  {bench.name}{label(config)}: {rows[-1]['bytes_mean']:.0f} B {bench.each}")

    for block in blocks:
        for keep in keeps:
            for selector in SELECTORS:
                run(block, keep, selector, SELECTION_CODECS[0])
        best = better_selector(rows, block, bench.score)
        for codec in SELECTION_CODECS[1:]:
            for keep in keeps:
                run(block, keep, best, codec)
    return rows


def better_selector(rows: list[dict[str, Any]], block: int, score: str) -> str:
    def mean_score(selector: str) -> float:
        found = [
            r[score]
            for r in rows
            if r["block"] == block and r["selector"] == selector
            and r["codec"] == SELECTION_CODECS[0]
        ]  # fmt: skip
        return float(np.mean(found)) if found else -1.0

    return max(SELECTORS, key=mean_score)


def fine_tune_runs(
    bench: SplitBench, selected: list[dict], loss: Callable, batches: Batches,
    epochs: int, lr: float, seed: int, echo: Echo | None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Split fine-tuning after the last selection block with the better selector there:
    uncompressed split learning (fp32, every token) for one epoch, then each of FINE_TUNED for
    `epochs`. None without epochs or without selection rows."""
    if not epochs or not selected:
        return []
    block = max(r["block"] for r in selected)
    selector = better_selector(selected, block, bench.score)
    runs = [(1.0, "fp32"), *FINE_TUNED]
    tuned = []
    for i, (keep, codec) in enumerate(runs, 1):
        config = SplitConfig(
            block=block, keep=keep, selector=selector, codec=codec, zstd_level=bench.zstd_level
        )
        count = 1 if codec == "fp32" else epochs
        if echo:
            said = f"{bench.name}fine-tuning [{i}/{len(runs)}] {label(config)}"
            echo(f"  {said}, {count} epoch{'s' * (count != 1)}")
        tuned.append(fine_tune(bench, config, loss, batches, count, lr, seed))
    return tuned


def fine_tune(
    bench: SplitBench, config: SplitConfig, loss: Callable, batches: Batches, epochs: int,
    lr: float, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Both halves of a split copy trained with `loss(output, target)` on `batches`, through the
    compressed link both ways; bytes counted per epoch, the quality after each."""
    torch.manual_seed(seed)
    model = _split_copy(bench, config)
    link = model.link

    def evaluate() -> dict[str, Any]:
        return _row(config, measure(model, link, bench.quality))

    before = evaluate()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    history = []
    for epoch in range(epochs):
        link.bytes.reset()
        start = time.perf_counter()
        for inputs, target in batches():
            error = loss(model(**inputs), target)
            optimizer.zero_grad()
            error.backward()
            optimizer.step()
        down, up, seconds = link.bytes.down, link.bytes.up, time.perf_counter() - start
        history.append(
            {"epoch": epoch + 1, "down_bytes": down, "up_bytes": up, "seconds": seconds,
             **evaluate()}
        )  # fmt: skip
    final = history[-1] if history else before
    return {
        "block": config.block, "keep": config.keep, "selector": config.selector,
        "codec": config.codec, "label": label(config), "before": before, "epochs": history,
        "final": {**{k: v for k, v in final.items() if k not in ("epoch", "seconds")},
                  "fine_tuned": True},
    }  # fmt: skip


def _split_copy(bench: SplitBench, config: SplitConfig) -> SplitModel:
    return split_model(convert_(copy.deepcopy(bench.model), config), bench.example)


def _row(config: SplitConfig, measured: dict[str, float]) -> dict[str, Any]:
    c = config
    return {"block": c.block, "keep": c.keep, "selector": c.selector, "codec": c.codec, **measured}
