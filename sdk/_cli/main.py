"""The root `ponder` group and the model-side commands (demo, evaluate, sparsity, list) and
the `bench` group with its model-side benchmarks (exits, moe, moe-export)."""

from __future__ import annotations

import click

import ponder
from ponder._cli.options import UNIT, risk_options


class _Group(click.Group):
    """The root group: a user's mistake (`PonderError`) in any command, nested ones included,
    ends as a one-line error and exit code 1 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ponder.PonderError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ponder.__version__, prog_name="ponder")
def main() -> None:
    """ponder: adaptive-computation models for edge devices (early exits, calibrated thresholds)."""


@main.command()
@click.option(
    "--out",
    default="ponder-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the checkpoint, plot and report.",
)
@risk_options(delta=0.02)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out: str, delta: float, epsilon: float, quiet: bool) -> None:
    """Train a digits CNN, add ZTW early exits, calibrate, and show the cost–accuracy trade-off."""
    from ponder._cli.demo import run_demo

    run_demo(out, delta=delta, epsilon=epsilon, progress=not quiet, echo=click.echo)


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option("--data", help="Data set to evaluate on (default: the one the checkpoint records).")
@click.option(
    "--rule",
    type=click.Choice(sorted(ponder.list_exit_rules())),
    help="Exit rule (default: the one the checkpoint records).",
)
@risk_options(delta=0.01)
@click.option(
    "--budget",
    type=click.FloatRange(0, 1, min_open=True),
    help="Also fit per-exit thresholds for this FLOPs fraction (quantile matching).",
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Folder for report.json and exits.png."
)
def evaluate(checkpoint, data, rule, delta, epsilon, budget, out) -> None:
    """Evaluate a saved early-exit checkpoint and calibrate a risk-controlled threshold."""
    from ponder._calibration.checkpoint import evaluate_checkpoint

    evaluate_checkpoint(
        checkpoint,
        data=data,
        rule=rule,
        delta=delta,
        epsilon=epsilon,
        budget=budget,
        out=out,
        echo=click.echo,
    )


@main.command()
@click.argument("model", default="minilm")
@click.option("--texts", default=200, show_default=True, help="Standard-library docstrings to use.")
@click.option(
    "--mode",
    default="topk",
    show_default=True,
    type=click.Choice(["topk", "threshold"]),
    help="Top-k per token, or one magnitude cut per layer.",
)
@click.option(
    "--keep",
    default=0.99,
    show_default=True,
    type=UNIT,
    help="Share of the dense quality that must be kept.",
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Folder for sparsity.json and sparsity.png."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def sparsity(model, texts, mode, keep, out, quiet) -> None:
    """Critical sparsity of each FFN component (input, gate, up, intermediate) of a text encoder.

    MODEL is "minilm" (the offline all-MiniLM-L6-v2) or a local transformers model folder.
    """
    from ponder._sparsity.report import run_sparsity

    run_sparsity(
        model, texts=texts, mode=mode, keep=keep, out=out, progress=not quiet, echo=click.echo
    )


def _names(names: list[str]) -> dict[str, str]:
    return dict.fromkeys(names, "")


def _models() -> dict[str, str]:
    from ponder.models import MODELS

    return {name: (build.__doc__ or "").strip().splitlines()[0] for name, build in MODELS.items()}


def _datasets() -> dict[str, str]:
    from ponder.data import list_datasets

    return _names(list_datasets())


def _kernels() -> dict[str, str]:
    from ponder.kernels import list_backends

    return list_backends()


def _backends() -> dict[str, str]:
    from ponder.runtime import list_backends

    return list_backends()


def _codecs() -> dict[str, str]:
    from ponder.runtime import list_codecs

    return list_codecs()


def _selectors() -> dict[str, str]:
    from ponder._split.config import SELECTORS

    return dict(SELECTORS)


# what `ponder list` shows: registry name -> {entry: one line about it}
_REGISTRIES = {
    "rules": ponder.list_exit_rules,
    "conversions": lambda: _names(ponder.list_conversions()),
    "gates": lambda: _names(ponder.list_gates()),
    "models": _models,
    "datasets": _datasets,
    "kernels": _kernels,
    "backends": _backends,
    "codecs": _codecs,
    "selectors": _selectors,
}


@main.command("list")
@click.argument("registry", type=click.Choice(sorted(_REGISTRIES)))
def list_(registry: str) -> None:
    """List what a registry holds: exit rules, conversions, MoE gates, built-in models, data
    sets, MoE kernel backends, runtime backends, offload codecs, split token selectors."""
    entries = _REGISTRIES[registry]()
    width = max(map(len, entries), default=0)
    for name, about in entries.items():
        click.echo(f"{name:{width}s}  {about}".rstrip())


@main.group()
def bench() -> None:
    """Benchmarks that users can run on their own machine (JSON + PNG + a printed table)."""


@bench.command("exits")
@click.option(
    "--out", default="ponder-bench/exits", show_default=True, type=click.Path(file_okay=False)
)
@click.option(
    "--model",
    default="mnist1d-cnn",
    show_default=True,
    type=click.Choice(["mnist1d-cnn", "digits-vit", "minilm-docstrings"]),
    help="Backbone: the MNIST-1D CNN, a ViT on digits (both trained per seed), or the frozen "
    "all-MiniLM-L6-v2 with a linear head on stdlib docstrings.",
)
@click.option("--samples", default=5000, show_default=True, help="MNIST-1D samples to generate.")
@click.option(
    "--width",
    type=int,
    help="Width of a trained backbone (default: 128 for the CNN, the ViT's recipe).",
)
@click.option("--epochs", type=int, help="Epochs for a trained backbone (default: the recipe's).")
@click.option("--texts", type=int, help="minilm-docstrings: at most this many texts in all.")
@click.option(
    "--max-length", default=48, show_default=True, help="minilm-docstrings: tokens per text."
)
@click.option(
    "--seeds", default=3, show_default=True, help="Seeds (data split and init) to average."
)
@click.option("--num-exits", default=5, show_default=True, help="Early exits (evenly spaced).")
@click.option("--head", default="linear", show_default=True, type=click.Choice(["linear", "mlp"]))
@click.option(
    "--delta", default=0.01, show_default=True, help="Accuracy drop allowed by risk control."
)
@click.option(
    "--epsilon", default=0.1, show_default=True, help="Risk control's failure probability."
)
@click.option(
    "--repeats", default=15, show_default=True, help="Timing repeats per variant (CNN only)."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_exits(**options) -> None:
    """SDN vs ZTW heads: accuracy per FLOPs budget, EEFP and ECE per head, risk control over
    seeds, and (MNIST-1D CNN only) wall-clock against FLOPs."""
    from ponder._bench.exits import run_bench_exits

    progress = not options.pop("quiet")
    run_bench_exits(**options, progress=progress, echo=click.echo)


@bench.command("moe")
@click.option(
    "--out", default="ponder-bench/moe", show_default=True, type=click.Path(file_okay=False)
)
@click.option("--texts", default=600, show_default=True, help="Standard-library docstrings to use.")
@click.option("--expert-size", default=64, show_default=True, help="Neurons per expert.")
@click.option("--router-epochs", default=20, show_default=True, help="Router training epochs.")
@click.option("--repeats", default=20, show_default=True, help="Timing repeats per variant.")
@click.option(
    "--sparsified",
    type=click.Path(exists=True, file_okay=False),
    help="Also run on a sparsification-fine-tuned MiniLM saved in this folder.",
)
@click.option(
    "--small",
    is_flag=True,
    help="Instead: a small ReLU MLP classifier trained on MNIST-1D, accuracy as the metric.",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="cuda: one D2DMoE layer (MiniLM and ViT-B sizes, 128-16,384 tokens) on the GPU: dense, "
    "masked reference and the Triton kernel, fp16 and fp32, time against FLOPs fraction, "
    "after the `gpu` tests.",
)
@click.option(
    "--budget-s", default=270.0, show_default=True, help="--device cuda: stop measuring after."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_moe(
    out, texts, expert_size, router_epochs, repeats, sparsified, small, device, budget_s, quiet
) -> None:
    """D2DMoE on MiniLM: quality over tau, dynamic-k vs top-k vs oracle, one layer's wall-clock;
    with --device cuda, one layer on the GPU with the Triton kernel."""
    if device == "cuda":
        from ponder._bench.moe_gpu import run_bench_moe_gpu

        code = run_bench_moe_gpu(out, budget_s=budget_s, expert_size=expert_size)
        if code:
            raise click.ClickException("no CUDA device here: torch.cuda.is_available() is False")
        return
    if small:
        from pathlib import Path

        from ponder._bench.moe_small import run_small_moe

        Path(out).mkdir(parents=True, exist_ok=True)
        run_small_moe(Path(out) / "small.json", progress=not quiet, echo=click.echo)
        return
    from ponder._bench.moe import run_bench_moe

    second = None
    if sparsified:
        from ponder.models.text import load_text_encoder

        second = load_text_encoder(sparsified)
    run_bench_moe(
        out,
        texts=texts,
        expert_size=expert_size,
        router_epochs=router_epochs,
        repeats=repeats,
        progress=not quiet,
        echo=click.echo,
        sparsified_model=second,
    )


@bench.command("offload")
@click.option(
    "--out", default="ponder-bench/offload", show_default=True, type=click.Path(file_okay=False)
)
@click.option("--texts", default=600, show_default=True, help="Standard-library docstrings to use.")
@click.option(
    "--block",
    "blocks",
    type=int,
    multiple=True,
    help="Split after this block, 0-based (repeatable; default 1 and 3 of MiniLM's 0..5).",
)
@click.option(
    "--codec",
    "codecs",
    multiple=True,
    help="Codec to measure (repeatable; default every one, see `ponder list codecs`).",
)
@click.option(
    "--keep",
    "keeps",
    type=float,
    multiple=True,
    help="Token share to keep in token selection (repeatable; default 0.5, 0.25, 0.1).",
)
@click.option("--no-selection", is_flag=True, help="Send every token only (no selection).")
@click.option(
    "--train-texts", default=800, show_default=True, help="Docstrings for split fine-tuning."
)
@click.option("--epochs", default=3, show_default=True, help="Split fine-tuning epochs (0: none).")
@click.option(
    "--lr", default=5e-5, show_default=True, help="MiniLM split fine-tuning learning rate."
)
@click.option("--no-vit", is_flag=True, help="MiniLM only (no digits ViT half).")
@click.option("--max-length", default=128, show_default=True, help="Tokens per text at most.")
@click.option("--zstd-level", default=1, show_default=True, help="zstd level (1-22).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def bench_offload(
    out, texts, blocks, codecs, keeps, no_selection, train_texts, epochs, lr, no_vit,
    max_length, zstd_level, quiet,
) -> None:  # fmt: skip
    """The edge-cloud link on MiniLM: payload bytes against embedding quality per split,
    codec and token share, with and without split fine-tuning, against fp32 activations and
    the text itself, and encode/decode time."""
    from ponder._bench.offload import DEFAULT_BLOCKS, DEFAULT_KEEPS, run_bench_offload

    run_bench_offload(
        out,
        texts=texts,
        blocks=blocks or DEFAULT_BLOCKS,
        codecs=codecs or None,
        keeps=() if no_selection else keeps or DEFAULT_KEEPS,
        train_texts=train_texts,
        epochs=epochs,
        lr=lr,
        vit=not no_vit,
        max_length=max_length,
        zstd_level=zstd_level,
        progress=not quiet,
        echo=click.echo,
    )


@bench.command("serve")
@click.option(
    "--out", default="ponder-bench/serve", show_default=True, type=click.Path(file_okay=False)
)
@click.option("--quick", is_flag=True, help="Tiny counts and a briefly trained model (tests).")
@click.option("--seed", default=0, show_default=True, help="Training seed of the digits ViT.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def bench_serve(out, quick, seed, quiet) -> None:
    """The offload service on loopback with the digits ViT split bundle: throughput and
    p50/p99 latency at 1-16 clients (binary and JSON), server CPU per request, bytes per
    request per codec and keep level, and load, fault (server killed and restarted) and fuzz
    tests with every request counted."""
    from ponder._bench.serve import run_bench_serve

    run_bench_serve(out, quick=quick, seed=seed, progress=not quiet, echo=click.echo)


@bench.command("moe-export")
@click.option(
    "--out", default="ponder-bench/moe-export", show_default=True, type=click.Path(file_okay=False)
)
@click.option("--texts", default=600, show_default=True, help="Standard-library docstrings to use.")
@click.option("--router-epochs", default=20, show_default=True, help="Router training epochs.")
@click.option(
    "--tokens",
    multiple=True,
    type=int,
    help="Token count T to time (repeatable; default 128, 2048, 8192).",
)
@click.option("--repeats", default=20, show_default=True, help="Timing rounds per (backend, T).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_moe_export(out, texts, router_epochs, tokens, repeats, quiet) -> None:
    """One MiniLM MoE layer exported dense / masked / grouped: time vs FLOPs on ORT and ExecuTorch."""
    from ponder._bench.moe_export import DEFAULT_TOKENS, run_bench_moe_export

    run_bench_moe_export(
        out,
        texts=texts,
        router_epochs=router_epochs,
        tokens=tokens or DEFAULT_TOKENS,
        repeats=repeats,
        progress=not quiet,
        echo=click.echo,
    )
