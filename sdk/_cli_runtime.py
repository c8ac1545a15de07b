"""`ponder profile`, `ponder run` and `ponder simulate`: thin commands over ponder.runtime
(imported lazily, so the rest of the CLI never loads a runtime)."""

from __future__ import annotations

import click

import ponder

BACKENDS = ["onnxruntime", "executorch", "torch"]


def _backend_options(f):
    f = click.option("--int8", is_flag=True, help="Run the bundle's int8 files.")(f)
    f = click.option("--threads", type=int, help="Intra-op threads (onnxruntime, torch).")(f)
    return click.option("--backend", default="onnxruntime", show_default=True,
                        type=click.Choice(BACKENDS), help="Runtime that runs the stages.")(f)  # fmt: skip


def backend_options(backend: str, threads: int | None, int8: bool) -> dict:
    """Engine.load options from the CLI flags, only those the backend takes."""
    options = {}
    if threads:
        if backend == "executorch":
            raise click.UsageError("--threads is not supported by the executorch backend")
        options["threads"] = threads
    if int8:
        if backend == "torch":
            raise click.UsageError("--int8 needs the onnxruntime or executorch backend")
        options["int8"] = True
    return options


def energy_meter(echo) -> tuple[object | None, str | None]:
    """The first probe here that counts joules (RAPL, NVML), or (None, None) with the reasons
    printed."""
    from ponder.runtime import detect_probes

    found = detect_probes(names=["rapl", "nvml"])
    for name, probe in found.items():
        if not isinstance(probe, str):
            echo(f"energy: measured with the {name} probe")
            return probe, name
    reasons = "; ".join(f"{name}: {why}" for name, why in found.items())
    echo(f"energy: not measured ({reasons})")
    return None, None


@click.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@_backend_options
@click.option("--batch", default=1, show_default=True, help="Rows per stage call.")
@click.option("--warmup", default=5, show_default=True, help="Untimed rounds first.")
@click.option("--repeats", default=30, show_default=True, help="Timed rounds (medians kept).")
@click.option("--no-energy", is_flag=True, help="Do not look for an energy probe.")
def profile(bundle, backend, threads, int8, batch, warmup, repeats, no_energy) -> None:
    """Measure every stage's latency (and energy where a probe exists) on this device and store
    the cost table beside the bundle (costs.<backend>.json), where `ponder run` finds it."""
    try:
        from ponder._report import format_table
        from ponder.runtime import Engine, cost_table_path
        from ponder.runtime._profile import profile as measure

        engine = Engine.load(bundle, backend, costs=None, **backend_options(backend, threads, int8))
        click.echo(f"{bundle}: {engine.backend.description}")
        meter, source = (None, None) if no_energy else energy_meter(click.echo)
        table = measure(engine, batch=batch, warmup=warmup, repeats=repeats, meter=meter,
                        energy_source=source, echo=click.echo)  # fmt: skip
        path = table.save(cost_table_path(bundle, backend))
    except ponder.PonderError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_table(*cost_rows(engine.bundle.manifest, table)))
    click.echo(f"wrote {path} ({table.device}; batch {batch}, {repeats} rounds after {warmup})")


def cost_rows(manifest, table) -> tuple[list[str], list[list]]:
    """Stage, median, p90, cumulative time and its share beside the cumulative FLOPs share."""
    total_ms = table.cumulative_latency_ms()[-1] or 1.0
    total_flops = manifest.stages[-1].cumulative_flops or 1
    rows = []
    for s, cum in zip(table.stages, table.cumulative_latency_ms(), strict=True):
        spec = manifest.stages[s.index]
        rows.append([s.index, f"{s.latency_ms:.3f}", f"{s.latency_p90_ms:.3f}", f"{cum:.3f}",
                     f"{cum / total_ms:.1%}", f"{spec.cumulative_flops / total_flops:.1%}",
                     "-" if s.energy_mj is None else f"{s.energy_mj:.3f}"])  # fmt: skip
    head = ["stage", "median ms", "p90 ms", "cumulative ms", "time %", "FLOPs %", "energy mJ"]
    return head, rows
