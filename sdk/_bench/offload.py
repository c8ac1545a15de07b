"""`ponder bench offload`: the edge-cloud link on real data. The real all-MiniLM-L6-v2 split
after a block, every real token sent through each codec (`ponder.SplitConfig`): payload bytes
per text against embedding quality (cosine to the unsplit model's embedding, nearest-neighbour
retrieval agreement), against fp32 activations, and against sending the text itself; and the
device-side time to encode one payload (and the cloud's to decode it)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ponder._bench.moe_eval import retrieval_agreement
from ponder._bench.timing import machine
from ponder._convert.convert import convert_
from ponder._core.errors import ConfigError
from ponder._core.report import format_table, write_json
from ponder._split.config import SplitConfig
from ponder._split.link import split_link
from ponder.models.text import embed, load_minilm, remove_near_duplicates, stdlib_docstrings
from ponder.runtime import decode_payload, encode_payload, list_codecs

__all__ = ["run_bench_offload"]

DEFAULT_BLOCKS = (1, 3)  # 0-based: after the 2nd and the 4th of MiniLM's 6 blocks
# the goal: 32x smaller than fp32 activations at cosine >= 0.99 (text encoder)
GOAL = {"min_ratio_vs_fp32": 32.0, "min_cosine": 0.99}
_TIMING_REPEATS = 200


def run_bench_offload(
    out: str | Path = "ponder-bench/offload",
    *,
    texts: int = 600,
    blocks: Sequence[int] = DEFAULT_BLOCKS,
    codecs: Sequence[str] | None = None,
    max_length: int = 128,
    zstd_level: int = 1,
    seed: int = 0,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark; print the table, write offload.json and offload.png in `out`."""
    codecs = list(codecs or list_codecs())
    unknown = sorted(set(codecs) - set(list_codecs()))
    if unknown:
        raise ConfigError(f"unknown codecs {unknown}; known: {sorted(list_codecs())}")
    if texts < 10:
        raise ConfigError(f"texts must be at least 10, got {texts}")
    out = Path(out)
    dense, tokenizer = load_minilm()
    torch.manual_seed(seed)
    corpus = stdlib_docstrings(max_texts=texts, seed=seed)
    kept, _, removed = remove_near_duplicates(corpus, embed(dense, tokenizer, corpus), 0.95)
    reference = embed(dense, tokenizer, kept, max_length=max_length)
    data = {
        "texts": len(corpus),
        "near_duplicates_removed": removed,
        "eval_texts": len(kept),
        "max_length": max_length,
    }
    echo(
        f"all-MiniLM-L6-v2 on {len(kept)} standard-library docstrings ({removed} near-duplicates "
        f"removed), at most {max_length} tokens; every real token sent"
    )
    raw = _raw_input(kept, tokenizer, max_length, zstd_level)
    rows = []
    runs = [(b, c) for b in blocks for c in codecs]
    for i, (block, codec) in enumerate(runs, 1):
        model = convert_(
            copy.deepcopy(dense), SplitConfig(block=block, codec=codec, zstd_level=zstd_level)
        )
        link = split_link(model)
        link.bytes.reset()
        with torch.no_grad():
            emb = embed(model, tokenizer, kept, max_length=max_length)
        sent = np.asarray(link.bytes.sent)
        cosine = (emb * reference).sum(-1)  # [N], both unit-norm
        rows.append(
            {
                "block": block,
                "codec": codec,
                "bytes_mean": float(sent.mean()),
                "bytes_median": float(np.median(sent)),
                "cosine_mean": float(cosine.mean()),
                "cosine_p05": float(cosine.quantile(0.05)),
                **retrieval_agreement(emb, reference),
            }
        )
        if progress:
            echo(f"  [{i}/{len(runs)}] block {block} {codec}: {sent.mean():.0f} B a text")
    for row in rows:
        fp32 = next((r for r in rows if r["block"] == row["block"] and r["codec"] == "fp32"), None)
        row["ratio_vs_fp32"] = fp32["bytes_mean"] / row["bytes_mean"] if fp32 else None
        row["times_the_text"] = row["bytes_mean"] / raw["text_bytes_mean"]
    timing = _encode_times(dense, tokenizer, kept, blocks, codecs, max_length, zstd_level)
    results = {
        "config": {
            "texts": texts,
            "blocks": list(blocks),
            "codecs": codecs,
            "zstd_level": zstd_level,
            "seed": seed,
        },
        "machine": machine(),
        "data": data,
        "raw_input": raw,
        "rows": rows,
        "timing": timing,
        "goal": _goal(rows, raw),
    }
    _echo(results, echo)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "offload.json", results)
    _plot(results, out / "offload.png")
    echo(f"wrote {out / 'offload.json'} and {out / 'offload.png'}")
    return results


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
    return {
        **GOAL,
        "met": bool(ok),
        "best_ratio_at_cosine": best and {k: best[k] for k in ("block", "codec", "ratio_vs_fp32")},
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
    goal = results["goal"]
    best = goal["best_ratio_at_cosine"]
    said = (
        f"best at cosine >= {goal['min_cosine']}: {best['codec']} after block {best['block']}, "
        f"{best['ratio_vs_fp32']:.1f}x smaller than fp32"
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
    raw = results["raw_input"]
    ax.axvline(raw["text_bytes_mean"], color="gray", ls="--", label="the text (UTF-8)")
    ax.axhline(GOAL["min_cosine"], color="gray", ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("payload bytes per text (mean)")
    ax.set_ylabel("cosine to the unsplit embedding (mean)")
    ax.set_title("all-MiniLM-L6-v2 split, every real token sent")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
