"""`ponder export` and `ponder verify`: thin commands over ponder.export and, for verify, the
torch-free ponder.runtime (imported lazily, so that the rest of the CLI never loads executorch or
onnxruntime)."""

from __future__ import annotations

import click

from ponder._cli.options import block_list


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--target",
    default="all",
    show_default=True,
    type=click.Choice(["xnnpack", "portable", "onnx", "all"]),
    help="ExecuTorch with the XNNPACK delegate, ExecuTorch portable kernels, ONNX, or "
    "XNNPACK and ONNX.",
)
@click.option(
    "--calib-data",
    "data",
    help="Data set for sample inputs, operating points and int8 "
    "calibration (default: the one the checkpoint was trained on).",
)
@click.option(
    "--moe",
    default="grouped",
    show_default=True,
    type=click.Choice(["grouped", "masked"]),
    help="MoE layers in the exported files: grouped (each expert runs only on the tokens "
    "that chose it) or masked (every expert runs; fixed shapes).",
)
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    help="Also write int8 files (post-training, calibrated on --calib-data's calibration "
    "split) and report every exit's int8 accuracy next to fp32.",
)
@click.option(
    "--max-batch",
    type=click.IntRange(2),
    help="Largest batch a stage takes (ExecuTorch plans memory for it; the runtime splits "
    "larger batches). Default: 256, or 64 for transformers.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(2),
    help="Transformers: most tokens per input (default: the data's max length for a ponder "
    "convert checkpoint, else 128; never more than the position table).",
)
@click.option(
    "--split",
    type=click.IntRange(0),
    help="Write a split bundle instead: the device half up to this block (0-based; ONNX and "
    "ExecuTorch), the cloud half (tail/tail.onnx) and split.json, checked per keep level and "
    "codec. A checkpoint converted with a split needs no block here.",
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write."
)
def export(checkpoint, out, **options) -> None:
    """Export a checkpoint as a device bundle (model.pte, onnx/stage_<i>.onnx, manifest.json),
    checking every stage of every format against the eager model; with --split, as a split
    bundle (edge.onnx, edge.pte, tail/tail.onnx, split.json)."""
    from ponder.export import export_checkpoint

    export_checkpoint(checkpoint, out, **options, echo=click.echo)
    click.echo(f"wrote {out}; check it again any time with: ponder verify {out}")


@click.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option(
    "--require-all",
    is_flag=True,
    help="Fail when a format cannot be executed here (its runtime is not installed) "
    "instead of reporting it as not executed.",
)
def verify(bundle, require_all) -> None:
    """Re-check a bundle: file hashes, manifest schema and version, and every stage of every
    format run on the stored sample inputs against the stored eager outputs. A split bundle
    (split.json): the device half on each runtime and the cloud half through real payloads,
    per keep level and codec, against the eager split model.

    Needs no torch: ONNX files run on ONNX Runtime; model.pte needs the ExecuTorch runtime
    (pip install 'ponder[export]'), and without it is reported as not executed."""
    from pathlib import Path

    from ponder.runtime._bundle.verify import verify_bundle
    from ponder.runtime._offload.split import SPLIT_MANIFEST, verify_split

    if (Path(bundle) / SPLIT_MANIFEST).is_file():  # a split bundle: device and cloud halves
        checked = verify_split(bundle, echo=click.echo, require_all=require_all)
    else:
        checked = verify_bundle(bundle, echo=click.echo, require_all=require_all)
    if checked.not_executed:
        skipped = ", ".join(checked.not_executed)
        click.echo(f"bundle OK for what ran here; not executed: {skipped} (see above)")
    else:
        click.echo("bundle OK")


@click.command("export")
@click.option(
    "--out",
    default="ponder-bench/export",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the bundles, export.json and export.png.",
)
@click.option("--blocks", default=12, show_default=True, help="Transformer blocks.")
@click.option("--width", default=384, show_default=True, help="Token width.")
@click.option("--heads", default=6, show_default=True, help="Attention heads.")
@click.option("--image", default=224, show_default=True, help="Image side in pixels.")
@click.option("--patch", default=16, show_default=True, help="Patch side in pixels.")
@click.option(
    "--exits",
    default="3,6,9",
    show_default=True,
    callback=block_list,
    help="Transformer blocks (1-based) after which an early exit goes.",
)
@click.option("--threads", type=int, help="Threads for both runtimes (default: all cores).")
@click.option("--repeats", default=40, show_default=True, help="Interleaved timing rounds.")
@click.option(
    "--int8/--no-int8",
    default=True,
    show_default=True,
    help="Also time an int8 copy of the staged bundle (when ponder.export can quantize).",
)
@click.option(
    "--reuse",
    is_flag=True,
    help="Keep bundles already in --out that were written with the same settings.",
)
@click.option(
    "--provider",
    type=click.Choice(["cpu", "cuda", "tensorrt"]),
    default="cpu",
    show_default=True,
    help="ONNX Runtime's execution provider (cuda and tensorrt need onnxruntime-gpu and a GPU; "
    "the ExecuTorch side stays on the CPU).",
)
def bench_export(
    out, blocks, width, heads, image, patch, exits, threads, repeats, int8, reuse, provider
):
    """Staged bundle vs one monolithic method, ExecuTorch and ONNX Runtime, batch 1: time to
    reach each stage against its FLOPs fraction, file sizes (ViT-S/16-sized, random weights)."""
    from ponder._bench.export import run_bench_export

    run_bench_export(
        out,
        blocks=blocks,
        width=width,
        heads=heads,
        image=image,
        patch=patch,
        exits=exits,
        threads=threads,
        repeats=repeats,
        int8=int8,
        reuse=reuse,
        provider=provider,
        echo=click.echo,
    )


@click.command("transformer")
@click.option(
    "--out",
    default="ponder-bench/transformer",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the bundles, transformer.json and transformer.png.",
)
@click.option(
    "--model",
    default="minilm-docstrings",
    show_default=True,
    type=click.Choice(["minilm-docstrings", "digits-vit"]),
    help="The frozen all-MiniLM-L6-v2 with a head on stdlib docstrings, or the digits ViT "
    "trained from scratch.",
)
@click.option("--num-exits", default=3, show_default=True, help="Early exits (evenly spaced).")
@click.option("--style", default="ztw", show_default=True, type=click.Choice(["sdn", "ztw"]))
@click.option("--seed", default=0, show_default=True, help="Data split and training seed.")
@click.option("--samples", default=256, show_default=True, help="Test samples timed.")
@click.option(
    "--batch",
    "batches",
    multiple=True,
    type=int,
    help="Batch size to time (repeatable; default 1 and 64).",
)
@click.option("--threads", type=int, help="Threads for both runtimes (default: all cores).")
@click.option("--repeats", default=10, show_default=True, help="Interleaved timing rounds.")
@click.option(
    "--backend",
    "backends",
    multiple=True,
    type=click.Choice(["onnxruntime", "executorch"]),
    help="Runtime to time (repeatable; default both).",
)
@click.option(
    "--reuse",
    is_flag=True,
    help="Keep bundles already in --out that were written with the same settings.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_transformer(batches, backends, quiet, **options) -> None:
    """A real transformer with exits, exported staged and whole, on the engine (ONNX Runtime
    and ExecuTorch, batch 1 and 64): each operating point's time against its FLOPs fraction."""
    from ponder._bench.transformer import BACKENDS, run_bench_transformer

    run_bench_transformer(
        **options,
        batches=batches or (1, 64),
        backends=backends or BACKENDS,
        progress=not quiet,
        echo=click.echo,
    )
