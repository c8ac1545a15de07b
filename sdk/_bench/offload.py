"""`ponder bench offload`: the edge-cloud link on real data. The real all-MiniLM-L6-v2 split
after a block (`ponder.SplitConfig`): payload bytes per text against embedding quality (cosine
to the unsplit model's embedding, nearest-neighbour retrieval agreement), against fp32
activations, and against sending the text itself:

- every real token sent, through each codec;
- token selection (`ponder.split_model`): a share of each text's tokens kept, ranked by the
  class token's attention or by the attention received, through int8 and int4-g32;
- split fine-tuning over the compressed link (activations down, gradients up, both through
  the codec): both halves trained to the unsplit model's embeddings on other docstrings,
  every byte counted per epoch, against uncompressed split learning (fp32, every token);

and the device-side time to encode one payload (and the cloud's to decode it)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ponder._bench.moe_eval import retrieval_agreement
from ponder._bench.offload_driver import (
    SELECTORS,
    SplitBench,
    fine_tune_runs,
    measure,
    ratios,
    select_tokens,
)
from ponder._bench.offload_vit import echo_vit_half, run_vit_half
from ponder._bench.timing import machine
from ponder._convert.convert import convert_
from ponder._core.errors import ConfigError
from ponder._core.report import format_table, write_json
from ponder._split.config import SplitConfig
from ponder._split.link import split_link
from ponder.models.text import (
    MeanPooled,
    embed,
    length_batches,
    load_minilm,
    remove_near_duplicates,
    stdlib_docstrings,
)
from ponder.runtime import decode_payload, encode_payload, list_codecs

__all__ = ["run_bench_offload"]

DEFAULT_BLOCKS = (1, 3)  # 0-based: after the 2nd and the 4th of MiniLM's 6 blocks
DEFAULT_KEEPS = (0.5, 0.25, 0.1)
_BATCH = 32
VIT_LR = 5e-4
# the goal: 32x smaller than fp32 activations at cosine >= 0.99 (text encoder)
GOAL = {"min_ratio_vs_fp32": 32.0, "min_cosine": 0.99}
_TIMING_REPEATS = 200


def run_bench_offload(
    out: str | Path = "ponder-bench/offload",
    *,
    texts: int = 600,
    blocks: Sequence[int] = DEFAULT_BLOCKS,
    codecs: Sequence[str] | None = None,
    keeps: Sequence[float] = DEFAULT_KEEPS,
    train_texts: int = 800,
    epochs: int = 3,
    lr: float = 5e-5,
    vit: bool = True,
    max_length: int = 128,
    zstd_level: int = 1,
    seed: int = 0,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark; print the tables, write offload.json and offload.png in `out`.

    keeps: token shares for selection (empty: none); epochs: split fine-tuning epochs on
    `train_texts` other docstrings (0: none); vit: the digits ViT half too (its own
    fine-tuning learning rate, `VIT_LR`)."""
    codecs = list(codecs or list_codecs())
    unknown = sorted(set(codecs) - set(list_codecs()))
    if unknown:
        raise ConfigError(f"unknown codecs {unknown}; known: {sorted(list_codecs())}")
    if texts < 10:
        raise ConfigError(f"texts must be at least 10, got {texts}")
    if any(not 0 < k < 1 for k in keeps):
        raise ConfigError(f"keeps are token shares in (0, 1), got {list(keeps)}")
    if epochs < 0 or (epochs and train_texts < 8):
        raise ConfigError(f"need epochs >= 0 and train_texts >= 8, got {epochs}, {train_texts}")
    out = Path(out)
    dense, tokenizer = load_minilm()
    torch.manual_seed(seed)
    every = stdlib_docstrings(max_texts=texts + (train_texts if epochs else 0), seed=seed)
    unique, index, removed = remove_near_duplicates(every, embed(dense, tokenizer, every), 0.95)
    # near-duplicates go across the two sets too: no training text is close to a test text
    kept = [t for t, i in zip(unique, index, strict=True) if i < texts]
    training = [t for t, i in zip(unique, index, strict=True) if i >= texts]
    reference = embed(dense, tokenizer, kept, max_length=max_length)
    data = {
        "texts": texts,
        "near_duplicates_removed": removed,
        "eval_texts": len(kept),
        "train_texts": len(training),
        "max_length": max_length,
    }
    echo(
        f"all-MiniLM-L6-v2 on {len(kept)} standard-library docstrings ({removed} near-duplicates "
        f"removed), at most {max_length} tokens; every real token sent"
    )
    raw = _raw_input(kept, tokenizer, max_length, zstd_level)

    def quality(model: torch.nn.Module) -> dict[str, float]:
        return _agreement(embed(model, tokenizer, kept, max_length=max_length), reference)

    rows = []
    runs = [(b, c) for b in blocks for c in codecs]
    for i, (block, codec) in enumerate(runs, 1):
        model = convert_(
            copy.deepcopy(dense), SplitConfig(block=block, codec=codec, zstd_level=zstd_level)
        )
        row = {"block": block, "codec": codec, **measure(model, split_link(model), quality)}
        rows.append(row)
        if progress:
            echo(f"  [{i}/{len(runs)}] block {block} {codec}: {row['bytes_mean']:.0f} B a text")
    batch = length_batches(tokenizer, kept[:4], 4, max_length, torch.device("cpu"))[0][1]
    bench = SplitBench(
        model=MeanPooled(dense).eval(),
        example={k: batch[k] for k in ("input_ids", "attention_mask")},
        quality=quality, score="cosine_mean", zstd_level=zstd_level,
    )  # fmt: skip
    said = echo if progress else None
    selected = select_tokens(bench, blocks, keeps, said)
    tuned = []
    if epochs and keeps:
        batches = _training_batches(bench.model, tokenizer, training, max_length)
        tuned = fine_tune_runs(bench, selected, _one_minus_cosine, batches, epochs, lr, seed, said)
    measured = [*rows, *selected, *(t["final"] for t in tuned)]
    ratios(rows, measured, "times_the_text", raw["text_bytes_mean"])
    timing = _encode_times(dense, tokenizer, kept, blocks, codecs, max_length, zstd_level)
    image = None
    if vit:
        image = run_vit_half(
            blocks=blocks, codecs=codecs, keeps=keeps, epochs=epochs, lr=VIT_LR,
            zstd_level=zstd_level, seed=seed, progress=progress, echo=echo,
        )  # fmt: skip
    results = {
        "config": {
            "texts": texts,
            "blocks": list(blocks),
            "codecs": codecs,
            "keeps": list(keeps),
            "selectors": list(SELECTORS),
            "train_texts": train_texts,
            "epochs": epochs,
            "lr": lr,
            "batch": _BATCH,
            "zstd_level": zstd_level,
            "seed": seed,
        },
        "machine": machine(),
        "data": data,
        "raw_input": raw,
        "rows": rows,
        "selection": selected,
        "fine_tuning": tuned,
        "timing": timing,
        "goal": _goal(measured, raw),
        "digits_vit": image,
    }
    _echo(results, echo)
    if image is not None:
        echo_vit_half(image, echo)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "offload.json", results)
    _plot(results, out / "offload.png")
    echo(f"wrote {out / 'offload.json'} and {out / 'offload.png'}")
    return results


def _agreement(emb: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """MiniLM's quality: cosine to the unsplit model's embedding and retrieval agreement."""
    cosine = (emb * reference).sum(-1)  # [N], both unit-norm
    return {
        "cosine_mean": float(cosine.mean()),
        "cosine_p05": float(cosine.quantile(0.05)),
        **retrieval_agreement(emb, reference),
    }


def _one_minus_cosine(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (1 - torch.nn.functional.cosine_similarity(out, target)).mean()


def _training_batches(encoder, tokenizer, training, max_length) -> Callable[[], list]:
    """MiniLM's fine-tuning data: the unsplit model's embeddings of `training` as targets, in
    batches of similar length, in a fresh shuffled order each epoch."""
    target = embed(encoder, tokenizer, training, max_length=max_length)
    batches = [
        ({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, target[idx])
        for idx, enc in length_batches(tokenizer, training, _BATCH, max_length, torch.device("cpu"))
    ]

    def shuffled() -> list:
        return [batches[b] for b in torch.randperm(len(batches)).tolist()]

    return shuffled


def _raw_input(texts: list[str], tokenizer, max_length: int, level: int) -> dict[str, float]:
    """What sending the input instead costs: the UTF-8 text (cut where the model cuts it), that
    text zstd-compressed, and the token ids as uint16 (MiniLM's 30,522-word vocabulary fits)."""
    import zstandard

    enc = tokenizer(texts, truncation=True, max_length=max_length)
    cut = [tokenizer.decode(ids, skip_special_tokens=True) for ids in enc["input_ids"]]
    utf8 = [t.encode() for t in cut]
    packer = zstandard.ZstdCompressor(level=level)
    return {
        "text_bytes_mean": float(np.mean([len(b) for b in utf8])),
        "text_zstd_bytes_mean": float(np.mean([len(packer.compress(b)) for b in utf8])),
        "token_ids_uint16_bytes_mean": float(np.mean([2 * len(ids) for ids in enc["input_ids"]])),
        "tokens_mean": float(np.mean([len(ids) for ids in enc["input_ids"]])),
    }


def _encode_times(dense, tokenizer, texts, blocks, codecs, max_length, level) -> list[dict]:
    """Median ms to encode one text's payload (the device) and to decode it (the cloud), on the
    real activations of the text of median length, each codec timed in turn."""
    lengths = [
        len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    ]
    median_text = texts[int(np.argsort(lengths)[len(lengths) // 2])]
    enc = tokenizer([median_text], return_tensors="pt", truncation=True, max_length=max_length)
    with torch.no_grad():
        hidden = dense(**enc, output_hidden_states=True).hidden_states  # embeddings + each block
    rows = []
    for block in blocks:
        tokens = hidden[block + 1].numpy()  # [1, T, D], the output of block `block`
        for codec in codecs:
            data = encode_payload({"tokens": tokens}, codec, zstd_level=level)
            enc_ms = _median_ms(
                lambda t=tokens, c=codec: encode_payload({"tokens": t}, c, zstd_level=level)
            )
            dec_ms = _median_ms(lambda d=data: decode_payload(d))
            rows.append(
                {"block": block, "codec": codec, "tokens": tokens.shape[1],
                 "encode_ms": enc_ms, "decode_ms": dec_ms}
            )  # fmt: skip
    return rows


def _median_ms(fn: Callable[[], Any]) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(_TIMING_REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def _goal(rows: list[dict], raw: dict[str, float]) -> dict[str, Any]:
    ok = [
        r
        for r in rows
        if r["ratio_vs_fp32"] and r["ratio_vs_fp32"] >= GOAL["min_ratio_vs_fp32"]
        and r["cosine_mean"] >= GOAL["min_cosine"]
    ]  # fmt: skip
    good = [r for r in rows if r["cosine_mean"] >= GOAL["min_cosine"]]
    best = max(good, key=lambda r: r["ratio_vs_fp32"] or 0, default=None)
    smallest = min(r["bytes_mean"] for r in rows)
    keys = ("block", "codec", "keep", "selector", "fine_tuned", "ratio_vs_fp32", "cosine_mean")
    return {
        **GOAL,
        "met": bool(ok),
        "best_ratio_at_cosine": best and {k: best.get(k) for k in keys},
        "text_smaller_than_every_payload": raw["text_bytes_mean"] < smallest,
    }


def _echo(results: dict[str, Any], echo: Callable[[str], None]) -> None:
    m, raw = results["machine"], results["raw_input"]
    echo(f"{m.get('cpu', '?')}; zstd level {results['config']['zstd_level']} where it saves >= 10%")
    times = {(t["block"], t["codec"]): t for t in results["timing"]}
    table = [
        [
            r["block"], r["codec"], f"{r['bytes_mean']:.0f}", f"{r['ratio_vs_fp32']:.1f}x",
            f"{r['times_the_text']:.0f}x", f"{r['cosine_mean']:.4f}", f"{r['cosine_p05']:.4f}",
            f"{r['top1']:.1%}", f"{times[r['block'], r['codec']]['encode_ms']:.3f}",
            f"{times[r['block'], r['codec']]['decode_ms']:.3f}",
        ]
        for r in results["rows"]
    ]  # fmt: skip
    headers = ["block", "codec", "B/text", "vs fp32", "x the text", "cosine", "cos p05",
               "top-1 NN", "encode ms", "decode ms"]  # fmt: skip
    echo(format_table(headers, table))
    echo(
        f"raw input per text: {raw['text_bytes_mean']:.0f} B of UTF-8 text, "
        f"{raw['text_zstd_bytes_mean']:.0f} B zstd-compressed, "
        f"{raw['token_ids_uint16_bytes_mean']:.0f} B of uint16 token ids "
        f"({raw['tokens_mean']:.1f} tokens)"
    )
    if results["selection"]:
        echo("token selection (the kept positions travel too):")
        table = [
            [r["block"], f"{r['keep']:g}", r["selector"], r["codec"], f"{r['bytes_mean']:.0f}",
             _times(r["ratio_vs_fp32"]), f"{r['times_the_text']:.1f}x",
             f"{r['cosine_mean']:.4f}", f"{r['top1']:.1%}"]
            for r in results["selection"]
        ]  # fmt: skip
        headers = ["block", "keep", "selector", "codec", "B/text", "vs fp32", "x the text",
                   "cosine", "top-1 NN"]  # fmt: skip
        echo(format_table(headers, table))
    for run in results["fine_tuning"]:
        before = run["before"]
        echo(
            f"split fine-tuning, {run['label']}: before cosine {before['cosine_mean']:.4f}, "
            f"top-1 {before['top1']:.1%}"
        )
        table = [
            [e["epoch"], f"{e['down_bytes'] / 1e6:.2f}", f"{e['up_bytes'] / 1e6:.2f}",
             f"{e['cosine_mean']:.4f}", f"{e['top1']:.1%}", f"{e['seconds']:.0f}"]
            for e in run["epochs"]
        ]  # fmt: skip
        headers = ["epoch", "MB down", "MB up", "cosine", "top-1 NN", "s"]
        echo(format_table(headers, table))
    goal = results["goal"]
    best = goal["best_ratio_at_cosine"]
    kept = "" if not best or best.get("keep") in (None, 1) else f", keep {best['keep']:g}"
    said = (
        f"best at cosine >= {goal['min_cosine']}: {best['codec']} after block {best['block']}"
        f"{kept}, {best['ratio_vs_fp32']:.1f}x smaller than fp32"
        if best
        else f"no codec kept cosine >= {goal['min_cosine']}"
    )
    echo(
        f"goal (>= {goal['min_ratio_vs_fp32']:.0f}x smaller than fp32 at cosine >= "
        f"{goal['min_cosine']}): {'met' if goal['met'] else 'NOT met'}; {said}"
    )
    if goal["text_smaller_than_every_payload"]:
        echo(
            "the text itself is smaller than every split payload: sending it is the baseline to beat"
        )


def _times(ratio: float | None) -> str:
    return f"{ratio:.1f}x" if ratio else "-"


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for block in results["config"]["blocks"]:
        rows = sorted(
            (r for r in results["rows"] if r["block"] == block), key=lambda r: r["bytes_mean"]
        )
        ax.plot([r["bytes_mean"] for r in rows], [r["cosine_mean"] for r in rows], "o-",
                label=f"split after block {block}")  # fmt: skip
        for r in rows:
            ax.annotate(r["codec"], (r["bytes_mean"], r["cosine_mean"]), fontsize=7)
    for selector, marker in zip(SELECTORS, "sv", strict=True):
        rows = [r for r in results["selection"] if r["selector"] == selector]
        if rows:
            ax.scatter([r["bytes_mean"] for r in rows], [r["cosine_mean"] for r in rows],
                       marker=marker, s=18, label=f"token selection by {selector}")  # fmt: skip
    tuned = [run["final"] for run in results["fine_tuning"] if run["keep"] < 1]
    if tuned:
        ax.scatter([r["bytes_mean"] for r in tuned], [r["cosine_mean"] for r in tuned],
                   marker="*", s=80, color="black", label="after split fine-tuning")  # fmt: skip
    raw = results["raw_input"]
    ax.axvline(raw["text_bytes_mean"], color="gray", ls="--", label="the text (UTF-8)")
    ax.axhline(GOAL["min_cosine"], color="gray", ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("payload bytes per text (mean)")
    ax.set_ylabel("cosine to the unsplit embedding (mean)")
    ax.set_title("all-MiniLM-L6-v2 split: codecs, token selection, fine-tuning")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
