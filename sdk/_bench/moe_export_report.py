"""`ponder bench moe-export` output: the printed table and the plot of time fraction against
FLOPs fraction per backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ponder._core.plots import pyplot, save_figure
from ponder._core.report import format_table

__all__ = ["echo_table", "plot_moe_export"]

_NAMES = {"onnx": "ONNX Runtime (CPU EP)", "pte": "ExecuTorch (XNNPACK)"}


def echo_table(results: dict[str, Any], echo: Callable[[str], None]) -> None:
    info, config = results["machine"], results["config"]
    echo(
        f"\nMiniLM FFN {results['layer']} (384 -> 1536 -> 384, experts of "
        f"{config['expert_size']}) as (x [T, D], mask [T, E]) -> y programs: dense = the original "
        "FFN, masked = every expert computed then zeroed, grouped = each expert on its selected "
        f"rows; router selections at dynamic-k tau on held-out text. {info['cpu']}, "
        f"{info['cores']} cores; ONNX Runtime {info['onnxruntime']} with "
        f"{info['onnxruntime_intra_op_threads']} intra-op threads (spinning off); ExecuTorch "
        f"{info['executorch']} with {info['executorch_threads']} threads; medians of "
        f"{config['repeats']} interleaved rounds after {config['warmup']} warm-up."
    )
    rows = [
        [
            r["backend"],
            r["tokens"],
            r["tau"],
            r["flops_fraction"],
            r["median_ms"]["dense"],
            r["masked_over_dense"],
            r["grouped_over_dense"],
            r["grouped_over_dense_paired"],
            r["grouped_time_over_flops"],
            r["grouped_over_all_experts_paired"],
            max(r["max_abs_error"].values()),
        ]
        for r in results["rows"]
    ]
    headers = [
        "backend",
        "T",
        "tau",
        "FLOPs frac",
        "dense ms",
        "masked/dense",
        "grouped/dense",
        "(paired)",
        "grouped time/FLOPs",
        "grouped/all-experts",
        "max |err|",
    ]
    echo(format_table(headers, rows))
    echo(
        "FLOPs frac = mask.mean(), expert FLOPs run / dense (the router is not in these "
        "programs). (paired) = median of per-round ratios. grouped/all-experts = the grouped "
        "program's time over its own time with every expert selected: how far the runtime "
        "skips work, whatever its kernels. max |err| = largest max-abs difference of the three "
        "programs from eager PyTorch on the same inputs."
    )
    b_rows = [
        [
            b["backend"],
            b["tokens"],
            b["none_experts"]["median_ms"],
            b["none_experts"]["over_dense_paired"],
            b["all_experts"]["median_ms"],
            b["all_experts"]["over_dense_paired"],
        ]
        for b in results["grouped_bounds"]
    ]
    echo("\ngrouped program with no expert selected (fixed cost) and with all (full cost):")
    echo(format_table(["backend", "T", "none ms", "none/dense", "all ms", "all/dense"], b_rows))
    for backend, programs in results["programs"].items():
        for name, p in programs.items():
            if "portable_ops" in p:
                echo(
                    f"{backend} {name}: {p['xnnpack_delegates']} XNNPACK delegate(s), outside "
                    f"them (portable kernels): {p['portable_ops'] or 'nothing'}"
                )
            else:
                echo(f"{backend} {name}: {p['nodes']} ONNX nodes")


def plot_moe_export(path: str | Path, results: dict[str, Any]) -> Path:
    """Per backend: time fraction of dense against FLOPs fraction, grouped (solid) and masked
    (dashed) per T, with the proportional line and dense's level."""
    plt = pyplot()
    from matplotlib import ticker

    backends = list(results["programs"])
    fig, axes = plt.subplots(1, len(backends), figsize=(5.5 * len(backends), 4.2), squeeze=False)
    for ax, backend in zip(axes[0], backends, strict=True):
        rows = [r for r in results["rows"] if r["backend"] == backend]
        for i, T in enumerate(sorted({r["tokens"] for r in rows})):
            pts = sorted(
                (r["flops_fraction"], r["grouped_over_dense"], r["masked_over_dense"])
                for r in rows
                if r["tokens"] == T
            )
            flops, grouped, masked = zip(*pts, strict=True)
            color = f"C{i}"
            ax.plot(flops, grouped, "-o", color=color, ms=4, label=f"grouped, T={T}")
            ax.plot(flops, masked, "--s", color=color, ms=3, alpha=0.6, label=f"masked, T={T}")
        line = np.linspace(0.05, 1, 50)  # y = x, sampled: the y axis is logarithmic
        ax.plot(line, line, ":", color="grey", label="time = FLOPs")
        ax.axhline(1.0, color="black", lw=0.8, label="dense")
        ax.set_yscale("log")  # grouped/dense spans 0.3x to 10x
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_yticks([0.1, 0.2, 0.5, 1, 2, 5, 10, 20])
        ax.set_ylim(0.15, None)
        ax.set(
            xlabel="expert FLOPs run / dense",
            ylabel="time / dense program's",
            xlim=(0, 1),
            title=_NAMES.get(backend, backend),
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    title = f"MoE layer export, MiniLM {results['layer']}, {results['machine']['cores']} cores"
    return save_figure(fig, path, title)
