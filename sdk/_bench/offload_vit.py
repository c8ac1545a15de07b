"""The image half of `ponder bench offload`: the digits ViT (real 8x8 handwritten digits, trained
from scratch by its recipe) split after a block: test accuracy against payload bytes per image
for every codec with every token sent, for token selection by the class token's attention or
the attention received, and after split fine-tuning over the compressed link; against fp32
activations and against sending the image itself."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ponder._convert.convert import convert_
from ponder._core.report import format_table
from ponder._split.config import SplitConfig
from ponder._split.link import split_link
from ponder._split.program import split_model

__all__ = ["run_vit_half"]

SELECTORS = ("cls", "received")
SELECTION_CODECS = ("int8", "int4-g32")
FINE_TUNED = ((0.5, "int8"), (0.25, "int4-g32"))
GOAL = {"min_ratio_vs_fp32": 32.0, "max_accuracy_drop_pp": 1.0}
_BATCH = 64


def run_vit_half(
    *,
    blocks: Sequence[int],
    codecs: Sequence[str],
    keeps: Sequence[float],
    epochs: int,
    lr: float,
    zstd_level: int,
    seed: int,
    progress: bool,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    from ponder._bench.exits_models import bench_model

    bench = bench_model("digits-vit")
    prepared = bench.prepare(seed, progress)
    base, splits = prepared.base.eval(), prepared.splits
    x, y = splits.test.x, splits.test.y
    with torch.no_grad():
        dense = _accuracy(base(x), y)
    echo(f"{bench.description}: {len(y)} test images, accuracy {dense:.2%} unsplit")
    raw = _raw_input(x, zstd_level)
    rows = []
    for block in blocks:
        for codec in codecs:
            model = convert_(
                copy.deepcopy(base), SplitConfig(block=block, codec=codec, zstd_level=zstd_level)
            )
            link = split_link(model)
            link.bytes.reset()
            with torch.no_grad():
                acc = _accuracy(model(x), y)
            rows.append(_row(block, 1.0, "-", codec, acc, dense, link.bytes.sent))
    selected = []
    for block in blocks:
        for keep in keeps:
            for selector in SELECTORS:
                selected.append(
                    _selected(base, x, y, dense, block, keep, selector, "int8", zstd_level)
                )
        best = _better(selected, block)
        for codec in SELECTION_CODECS[1:]:
            for keep in keeps:
                selected.append(_selected(base, x, y, dense, block, keep, best, codec, zstd_level))
    for row in [*rows, *selected]:
        _ratios(row, rows, raw)
    tuned = []
    if epochs and keeps:
        block = max(blocks)
        selector = _better(selected, block)
        runs = [(1.0, "fp32"), *FINE_TUNED]
        for i, (keep, codec) in enumerate(runs, 1):
            config = SplitConfig(
                block=block, keep=keep, selector=selector, codec=codec, zstd_level=zstd_level
            )
            if progress:
                echo(
                    f"  digits ViT fine-tuning [{i}/{len(runs)}] block {block} keep {keep:g} {codec}"
                )
            run = _fine_tune(
                base, splits, dense, config, 1 if codec == "fp32" else epochs, lr, seed
            )
            _ratios(run["final"], rows, raw)
            tuned.append(run)
    return {
        "model": bench.description,
        "test_images": len(y),
        "dense_accuracy": dense,
        "raw_input": raw,
        "rows": rows,
        "selection": selected,
        "fine_tuning": tuned,
        "goal": _goal([*rows, *selected, *(t["final"] for t in tuned)], raw),
    }


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


def _row(block, keep, selector, codec, acc, dense, sent) -> dict[str, Any]:
    sent = np.asarray(sent)
    return {
        "block": block, "keep": keep, "selector": selector, "codec": codec,
        "bytes_mean": float(sent.mean()), "accuracy": acc,
        "drop_pp": 100 * (dense - acc),
    }  # fmt: skip


def _selected(base, x, y, dense, block, keep, selector, codec, level) -> dict[str, Any]:
    config = SplitConfig(block=block, keep=keep, selector=selector, codec=codec, zstd_level=level)
    model = split_model(convert_(copy.deepcopy(base), config), {"x": x[:4]})
    model.link.bytes.reset()
    with torch.no_grad():
        acc = _accuracy(model(x=x), y)
    return _row(block, keep, selector, codec, acc, dense, model.link.bytes.sent)


def _better(rows: list[dict[str, Any]], block: int) -> str:
    def mean_accuracy(selector: str) -> float:
        found = [
            r["accuracy"]
            for r in rows
            if r["block"] == block and r["selector"] == selector
            and r["codec"] == SELECTION_CODECS[0]
        ]  # fmt: skip
        return float(np.mean(found)) if found else -1.0

    return max(SELECTORS, key=mean_accuracy)


def _ratios(row: dict[str, Any], every_token: list[dict], raw: dict[str, float]) -> None:
    fp32 = next(
        (r for r in every_token if r["block"] == row["block"] and r["codec"] == "fp32"), None
    )
    row["ratio_vs_fp32"] = fp32["bytes_mean"] / row["bytes_mean"] if fp32 else None
    row["times_the_image"] = row["bytes_mean"] / raw["image_uint8_bytes"]


def _raw_input(x: torch.Tensor, level: int) -> dict[str, float]:
    """The image itself: 64 pixels of 0..16 as uint8, and zstd-compressed."""
    import zstandard

    pixels = x.flatten(1).round().clamp(0, 255).to(torch.uint8).numpy()
    packer = zstandard.ZstdCompressor(level=level)
    return {
        "image_uint8_bytes": float(pixels.shape[1]),
        "image_zstd_bytes_mean": float(
            np.mean([len(packer.compress(p.tobytes())) for p in pixels])
        ),
    }


def _fine_tune(base, splits, dense, config, epochs, lr, seed) -> dict[str, Any]:
    """Both halves of a split copy trained with cross-entropy on the training split, through
    the compressed link both ways; bytes counted per epoch, test accuracy after each."""
    torch.manual_seed(seed)
    x, y = splits.test.x, splits.test.y
    model = split_model(convert_(copy.deepcopy(base), config), {"x": x[:4]})
    link = model.link

    def evaluate() -> dict[str, Any]:
        link.bytes.reset()
        with torch.no_grad():
            acc = _accuracy(model(x=x), y)
        return _row(config.block, config.keep, config.selector, config.codec, acc, dense,
                    link.bytes.sent)  # fmt: skip

    before = evaluate()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    train_x, train_y = splits.train.x, splits.train.y
    history = []
    for epoch in range(epochs):
        link.bytes.reset()
        start = time.perf_counter()
        order = torch.randperm(len(train_y))
        for i in range(0, len(order), _BATCH):
            idx = order[i : i + _BATCH]
            loss = torch.nn.functional.cross_entropy(model(x=train_x[idx]), train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        down, up, seconds = link.bytes.down, link.bytes.up, time.perf_counter() - start
        history.append(
            {"epoch": epoch + 1, "down_bytes": down, "up_bytes": up, "seconds": seconds,
             **evaluate()}
        )  # fmt: skip
    final = history[-1] if history else before
    label = (
        f"block {config.block}, "
        + ("every token" if config.keep == 1 else f"keep {config.keep:g} by {config.selector}")
        + f", {config.codec}"
    )
    return {
        "label": label, "keep": config.keep, "codec": config.codec, "before": before,
        "epochs": history,
        "final": {**{k: v for k, v in final.items() if k not in ("epoch", "seconds")},
                  "fine_tuned": True},
    }  # fmt: skip


def _goal(rows: list[dict[str, Any]], raw: dict[str, float]) -> dict[str, Any]:
    good = [r for r in rows if r["drop_pp"] <= GOAL["max_accuracy_drop_pp"]]
    ok = [r for r in good if (r["ratio_vs_fp32"] or 0) >= GOAL["min_ratio_vs_fp32"]]
    best = max(good, key=lambda r: r["ratio_vs_fp32"] or 0, default=None)
    return {
        **GOAL,
        "met": bool(ok),
        "best_ratio_within_drop": best,
        "image_smaller_than_every_payload": raw["image_uint8_bytes"]
        < min(r["bytes_mean"] for r in rows),
    }


def echo_vit_half(vit: dict[str, Any], echo: Callable[[str], None]) -> None:
    raw = vit["raw_input"]
    echo(
        f"{vit['model']}: accuracy {vit['dense_accuracy']:.2%} unsplit, {vit['test_images']} test images"
    )
    table = [
        [r["block"], f"{r['keep']:g}", r["selector"], r["codec"], f"{r['bytes_mean']:.0f}",
         f"{r['ratio_vs_fp32']:.1f}x" if r["ratio_vs_fp32"] else "-",
         f"{r['times_the_image']:.1f}x", f"{r['accuracy']:.2%}", f"{r['drop_pp']:+.1f}"]
        for r in [*vit["rows"], *vit["selection"]]
    ]  # fmt: skip
    headers = ["block", "keep", "selector", "codec", "B/image", "vs fp32", "x the image",
               "accuracy", "drop pp"]  # fmt: skip
    echo(format_table(headers, table))
    for run in vit["fine_tuning"]:
        b = run["before"]
        echo(f"digits ViT split fine-tuning, {run['label']}: before {b['accuracy']:.2%}")
        table = [
            [e["epoch"], f"{e['down_bytes'] / 1e6:.3f}", f"{e['up_bytes'] / 1e6:.3f}",
             f"{e['accuracy']:.2%}", f"{e['drop_pp']:+.1f}", f"{e['seconds']:.0f}"]
            for e in run["epochs"]
        ]  # fmt: skip
        echo(format_table(["epoch", "MB down", "MB up", "accuracy", "drop pp", "s"], table))
    echo(
        f"the image: {raw['image_uint8_bytes']:.0f} B as uint8 pixels, "
        f"{raw['image_zstd_bytes_mean']:.0f} B zstd-compressed"
    )
    goal = vit["goal"]
    best = goal["best_ratio_within_drop"]
    echo(
        f"goal (>= {goal['min_ratio_vs_fp32']:.0f}x smaller than fp32 within "
        f"{goal['max_accuracy_drop_pp']:g} pp): {'met' if goal['met'] else 'NOT met'}"
        + (
            f"; best within the drop: {best['codec']} after block {best['block']}, keep "
            f"{best['keep']:g}{' (fine-tuned)' if best.get('fine_tuned') else ''}, "
            f"{best['ratio_vs_fp32']:.1f}x"
            if best and best["ratio_vs_fp32"]
            else ""
        )
    )
    if goal["image_smaller_than_every_payload"]:
        echo(
            "the image itself is smaller than every split payload: sending it is the baseline to beat"
        )
