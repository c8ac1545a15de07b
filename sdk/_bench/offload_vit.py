"""The image half of `ponder bench offload`: the digits ViT (real 8x8 handwritten digits, trained
from scratch by its recipe) split after a block: test accuracy against payload bytes per image
for every codec with every token sent, for token selection by the class token's attention or
the attention received, and after split fine-tuning over the compressed link; against fp32
activations and against sending the image itself."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ponder._bench.offload_driver import SplitBench, fine_tune_runs, measure, ratios, select_tokens
from ponder._convert.convert import convert_
from ponder._core.report import format_table
from ponder._split.config import SplitConfig
from ponder._split.link import split_link

__all__ = ["run_vit_half"]

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

    digits = bench_model("digits-vit")
    prepared = digits.prepare(seed, progress)
    base, splits = prepared.base.eval(), prepared.splits
    x, y = splits.test.x, splits.test.y
    with torch.no_grad():
        dense = _accuracy(base(x), y)
    echo(f"{digits.description}: {len(y)} test images, accuracy {dense:.2%} unsplit")
    raw = _raw_input(x, zstd_level)

    def quality(split: torch.nn.Module) -> dict[str, float]:
        accuracy = _accuracy(split(x=x), y)
        return {"accuracy": accuracy, "drop_pp": 100 * (dense - accuracy)}

    rows = []
    for block in blocks:
        for codec in codecs:
            split = convert_(
                copy.deepcopy(base), SplitConfig(block=block, codec=codec, zstd_level=zstd_level)
            )
            rows.append(
                {"block": block, "keep": 1.0, "selector": "-", "codec": codec,
                 **measure(split, split_link(split), quality)}
            )  # fmt: skip
    bench = SplitBench(
        model=base, example={"x": x[:4]}, quality=quality, score="accuracy",
        zstd_level=zstd_level, name="digits ViT ", each="an image",
    )  # fmt: skip
    said = echo if progress else None
    selected = select_tokens(bench, blocks, keeps, said)
    batches = _training_batches(splits.train.x, splits.train.y)
    cross_entropy = torch.nn.functional.cross_entropy
    tuned = fine_tune_runs(bench, selected, cross_entropy, batches, epochs, lr, seed, said)
    measured = [*rows, *selected, *(t["final"] for t in tuned)]
    ratios(rows, measured, "times_the_image", raw["image_uint8_bytes"])
    return {
        "model": digits.description,
        "test_images": len(y),
        "dense_accuracy": dense,
        "raw_input": raw,
        "rows": rows,
        "selection": selected,
        "fine_tuning": tuned,
        "goal": _goal(measured, raw),
    }


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


def _training_batches(train_x: torch.Tensor, train_y: torch.Tensor) -> Callable[[], list]:
    """The training split in batches of `_BATCH`, reshuffled each epoch."""

    def shuffled() -> list:
        order = torch.randperm(len(train_y))
        return [({"x": train_x[idx]}, train_y[idx]) for idx in order.split(_BATCH)]

    return shuffled


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
