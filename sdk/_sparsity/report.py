"""`ponder sparsity MODEL`: critical sparsity of a text encoder's FFN components on real text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ponder._core.plots import pyplot, save_figure
from ponder._core.report import format_table, write_json
from ponder._sparsity.critical import CriticalReport, critical_sparsity


def run_sparsity(
    model_name: str = "minilm",
    *,
    texts: int = 200,
    mode: str = "topk",
    keep: float = 0.99,
    out: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> CriticalReport:
    """Quality = mean cosine of the sentence embeddings to the dense model's on `texts`
    standard-library docstrings; `model_name` is "minilm" or a local transformers folder."""
    from ponder.models.text import embed, load_minilm, load_text_encoder, stdlib_docstrings

    model, tokenizer = load_minilm() if model_name == "minilm" else load_text_encoder(model_name)
    docs = stdlib_docstrings(max_texts=texts)
    dense = embed(model, tokenizer, docs)

    def quality(m: torch.nn.Module) -> float:
        return float((embed(m, tokenizer, docs) * dense).sum(-1).mean())  # unit vectors

    echo(
        f"critical sparsity of {model_name}: {len(docs)} docstrings, {mode} sparsification, "
        f"quality = mean cosine to the dense embeddings, keep >= {keep:.0%} of it"
    )
    report = critical_sparsity(model, quality, mode=mode, keep=keep, progress=progress)
    echo(format_table(report.headers(), report.rows()))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(
            out / "sparsity.json", {"model": model_name, "texts": len(docs), **report.to_dict()}
        )
        echo(f"wrote {out / 'sparsity.json'} and {_plot(out / 'sparsity.png', report, model_name)}")
    return report


def _plot(path: Path, report: CriticalReport, title: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for component, qualities in report.quality.items():
        ax.plot(
            report.levels,
            qualities,
            marker="o",
            label=f"{component} (critical {report.critical(component):.0%})",
        )
    ax.axhline(
        report.keep * report.baseline,
        color="grey",
        ls="--",
        lw=1,
        label=f"{report.keep:.0%} of dense",
    )
    ax.set(
        xlabel="sparsity (share of entries zeroed)",
        ylabel="quality",
        title=f"critical sparsity: {title}",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
