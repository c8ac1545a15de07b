"""`ponder export` and `ponder verify`: thin commands over ponder.export (imported lazily, so
that the rest of the CLI never loads executorch or onnxruntime)."""

from __future__ import annotations

import click

import ponder


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option("--target", default="all", show_default=True,
              type=click.Choice(["xnnpack", "portable", "onnx", "all"]),
              help="ExecuTorch with the XNNPACK delegate, ExecuTorch portable kernels, ONNX, or "
                   "XNNPACK and ONNX.")  # fmt: skip
@click.option("--calib-data", "data", help="Data set for sample inputs and operating points "
              "(default: the one the checkpoint was trained on).")  # fmt: skip
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Bundle folder to write.")  # fmt: skip
def export(checkpoint, target, data, out) -> None:
    """Export a checkpoint as a device bundle (model.pte, onnx/stage_<i>.onnx, manifest.json),
    checking every stage of every format against the eager model."""
    try:
        from ponder.export import export_checkpoint

        export_checkpoint(checkpoint, out, target=target, data=data, echo=click.echo)
    except ponder.PonderError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {out}; check it again any time with: ponder verify {out}")


@click.command()
@click.argument("bundle", type=click.Path(file_okay=False))
def verify(bundle) -> None:
    """Re-check a bundle: file hashes, manifest schema and version, and every stage of every
    format run on the stored sample inputs against the stored eager outputs."""
    try:
        from ponder.export import verify_bundle

        verify_bundle(bundle, echo=click.echo)
    except ponder.PonderError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("bundle OK")
