"""`ponder convert`: a thin command over `convert_pretrained` (imported when it runs, so that
building the CLI loads no torch)."""

from __future__ import annotations

import click

from ponder._cli.options import block_list, risk_options


@click.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--train",
    required=True,
    type=click.Path(exists=True),
    help="Labelled data: a .jsonl file (text, label), a folder of images with one sub-folder "
    "per class, or an .npz file (x, y). Split 60/20/20 unless --calib-data is given.",
)
@click.option(
    "--calib-data",
    "calib",
    type=click.Path(exists=True),
    help="Held-out labelled data in the same format, split half calibration, half test "
    "(then all of --train trains).",
)
@click.option("--exits", type=int, help="Number of exits, evenly spaced (default 4).")
@click.option(
    "--exit-blocks",
    callback=block_list,
    help="Exits after these 0-based blocks instead, e.g. 1,3.",
)
@click.option("--style", default="ztw", show_default=True, type=click.Choice(["ztw", "sdn"]))
@click.option("--head", default="linear", show_default=True, type=click.Choice(["linear", "mlp"]))
@click.option("--joint", is_flag=True, help="Train the backbone with the exits (default: frozen).")
@click.option(
    "--pooling",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "mean", "cls", "last"]),
    help="A base model's pooling for the head ponder adds (auto: sentence-transformers "
    "folders mean, causal models last token, others first token).",
)
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option(
    "--max-length", default=128, show_default=True, type=click.IntRange(2), help="Tokens per text."
)
@click.option("--seed", default=0, show_default=True, help="Seed of the split and the training.")
@risk_options(delta=0.01)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Checkpoint folder to write."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def convert(model_dir, train, calib, exits, exit_blocks, out, quiet, **options) -> None:
    """Add early exits to the Hugging Face model in MODEL_DIR (a from_pretrained folder of a
    classifier, or of a base model, which gets a pooled linear head fitted first), train them on
    your data, calibrate, and save a checkpoint for `ponder evaluate` and `ponder export`."""
    if exits is not None and exit_blocks is not None:
        raise click.UsageError("give --exits or --exit-blocks, not both")
    from ponder._cli.pretrained import convert_pretrained

    convert_pretrained(
        model_dir,
        train,
        out,
        calib=calib,
        exits=exits,
        exit_blocks=exit_blocks,
        progress=not quiet,
        echo=click.echo,
        **options,
    )
