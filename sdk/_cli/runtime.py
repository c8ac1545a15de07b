"""`ponder profile`, `ponder run` and `ponder simulate`: thin commands over ponder.runtime
(imported lazily, so the rest of the CLI never loads a runtime)."""

from __future__ import annotations

import click

BACKENDS = ["onnxruntime", "executorch", "torch"]


def _backend_options(f):
    f = click.option(
        "--device", help="torch backend: where the stages run (cpu, cuda, cuda:N; default cpu)."
    )(f)
    f = click.option(
        "--provider",
        "providers",
        multiple=True,
        help="onnxruntime backend: an execution provider, best first (repeat the flag); "
        "ONNX Runtime's names or tensorrt, cuda, cpu (default: the best this build offers).",
    )(f)
    f = click.option("--int8", is_flag=True, help="Run the bundle's int8 files.")(f)
    f = click.option("--threads", type=int, help="Intra-op threads (onnxruntime, torch).")(f)
    return click.option(
        "--backend",
        default="onnxruntime",
        show_default=True,
        type=click.Choice(BACKENDS),
        help="Runtime that runs the stages.",
    )(f)


def backend_options(
    backend: str,
    threads: int | None = None,
    int8: bool = False,
    providers: tuple[str, ...] = (),
    device: str | None = None,
) -> dict:
    """Engine.load options from the CLI flags, only those the backend takes."""
    options = {}
    if providers:
        if backend != "onnxruntime":
            raise click.UsageError(
                f"--provider needs the onnxruntime backend (--backend onnxruntime), not {backend}"
            )
        options["providers"] = list(providers)
    if device:
        if backend != "torch":
            raise click.UsageError(
                f"--device needs the torch backend (--backend torch), not {backend}"
            )
        options["device"] = device
    if threads:
        if backend == "executorch":
            raise click.UsageError("--threads is not supported by the executorch backend")
        options["threads"] = threads
    if int8:
        if backend == "torch":
            raise click.UsageError("--int8 needs the onnxruntime or executorch backend")
        options["int8"] = True
    return options


def energy_meter(echo, gpu: bool = False) -> tuple[object | None, str | None]:
    """The first probe here that counts joules (RAPL, NVML; NVML first when the stages run on
    a GPU), or (None, None) with the reasons printed."""
    from ponder.runtime import detect_probes

    found = detect_probes(names=["nvml", "rapl"] if gpu else ["rapl", "nvml"])
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
def profile(
    bundle, backend, threads, int8, providers, device, batch, warmup, repeats, no_energy
) -> None:
    """Measure every stage's latency (and energy where a probe exists) on this device and store
    the cost table beside the bundle (costs.<backend>.json; on a GPU costs.onnxruntime-cuda,
    -tensorrt or torch-cuda), where `ponder run` finds it."""
    from ponder._core.report import format_table
    from ponder.runtime import Engine, cost_table_path
    from ponder.runtime._engine.profile import profile as measure

    options = backend_options(backend, threads, int8, providers, device)
    engine = Engine.load(bundle, backend, costs=None, **options)
    click.echo(f"{bundle}: {engine.backend.description}")
    gpu = engine.backend.cost_key != engine.backend.name  # a table of its own: a GPU
    meter, source = (None, None) if no_energy else energy_meter(click.echo, gpu)
    table = measure(
        engine,
        batch=batch,
        warmup=warmup,
        repeats=repeats,
        meter=meter,
        energy_source=source,
        echo=click.echo,
    )
    path = table.save(cost_table_path(bundle, engine.backend.cost_key))
    click.echo(format_table(*cost_rows(engine.bundle.manifest, table)))
    click.echo(f"wrote {path} ({table.device}; batch {batch}, {repeats} rounds after {warmup})")


def cost_rows(manifest, table) -> tuple[list[str], list[list]]:
    """Stage, median, p90, cumulative time and its share beside the cumulative FLOPs share."""
    total_ms = table.cumulative_latency_ms()[-1] or 1.0
    total_flops = manifest.stages[-1].cumulative_flops or 1
    rows = []
    for s, cum in zip(table.stages, table.cumulative_latency_ms(), strict=True):
        spec = manifest.stages[s.index]
        rows.append(
            [
                s.index,
                f"{s.latency_ms:.3f}",
                f"{s.latency_p90_ms:.3f}",
                f"{cum:.3f}",
                f"{cum / total_ms:.1%}",
                f"{spec.cumulative_flops / total_flops:.1%}",
                "-" if s.energy_mj is None else f"{s.energy_mj:.3f}",
            ]
        )
    head = ["stage", "median ms", "p90 ms", "cumulative ms", "time %", "FLOPs %", "energy mJ"]
    return head, rows


@click.command("runtime")
@click.option(
    "--out", default="ponder-bench/runtime", show_default=True, help="Folder for results."
)
@click.option("--width", default=256, show_default=True, help="Channels of the digits CNN.")
@click.option("--budgets", default=6, show_default=True, help="Latency budgets to try.")
@click.option(
    "--rounds", default=2, show_default=True, help="Passes over the test images per budget."
)
@click.option(
    "--repeats", default=20, show_default=True, help="Rounds for overhead and throughput."
)
@click.option(
    "--vit/--no-vit",
    default=True,
    show_default=True,
    help="Also measure the engine's overhead on a ViT-S-sized bundle (random weights).",
)
@click.option("--reuse", is_flag=True, help="Reuse the bundles already under --out.")
@click.option(
    "--provider",
    type=click.Choice(["cpu", "cuda", "tensorrt"]),
    default="cpu",
    show_default=True,
    help="ONNX Runtime's execution provider (cuda and tensorrt need onnxruntime-gpu and a GPU).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_runtime(out, width, budgets, rounds, repeats, vit, reuse, provider, quiet) -> None:
    """The engine and policy on an exported digits CNN (ONNX Runtime): SLO attainment and
    accuracy vs the best point with hindsight, overheads, batch-64 throughput."""
    from ponder._bench.runtime import VIT_S, run_bench_runtime

    run_bench_runtime(
        out,
        width=width,
        budgets=budgets,
        rounds=rounds,
        repeats=repeats,
        vit=VIT_S if vit else None,
        reuse=reuse,
        provider=provider,
        progress=not quiet,
        echo=click.echo,
    )


@click.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help=".npy (one input) or .npz (arrays named as the bundle's inputs; an array "
    "named y or labels is used to report accuracy).",
)
@_backend_options
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Policy file (TOML or JSON): battery-dependent budgets.",
)
@click.option("--latency-ms", type=float, help="Latency budget per request (worst case).")
@click.option("--energy-mj", type=float, help="Energy budget per inference (mean).")
@click.option("--deadline-ms", type=float, help="Anytime mode: answer every request by then.")
@click.option("--batch", default=1, show_default=True, help="Rows per request.")
@click.option("--power-w", type=float, help="Device power for energy estimates without a probe.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Write results as JSON.")
@click.option(
    "--offload",
    "offload_url",
    help="A split bundle: offload to the `ponder serve` at this URL, falling back to the "
    "bundle's local model when that fails; with --policy/--latency-ms/--energy-mj the policy "
    "decides per request between local points and offload points, else every request is "
    "offloaded at --keep and --codec.",
)
@click.option(
    "--radio-power-w",
    default=1.0,
    show_default=True,
    help="With --offload and a policy: the device's draw while a request is on the link.",
)
@click.option(
    "--explain", is_flag=True, help="With --offload and a policy: say why, for each new choice."
)
@click.option("--keep", default=1.0, show_default=True, help="With --offload: token share sent.")
@click.option("--codec", help="With --offload: the payload codec (default: the bundle's).")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    help="With --offload: file holding the server's bearer token.",
)
@click.option("--timeout-s", default=2.0, show_default=True, help="With --offload: per request.")
def run(
    bundle,
    input_path,
    backend,
    threads,
    int8,
    providers,
    device,
    policy_file,
    latency_ms,
    energy_mj,
    deadline_ms,
    batch,
    power_w,
    out_path,
    offload_url,
    keep,
    codec,
    token_file,
    timeout_s,
    radio_power_w,
    explain,
) -> None:
    """Run a bundle on inputs, request by request, under a policy (or the bundle's own exit
    rule): prints exits per stage, latency percentiles, energy and what the policy chose.
    With --offload (a split bundle): where each answer came from (cloud, fallback), latency
    percentiles and payload bytes."""
    if policy_file and (latency_ms or energy_mj):
        raise click.UsageError("give --policy or --latency-ms/--energy-mj, not both")
    if offload_url:
        spec = _spec(policy_file, latency_ms, energy_mj)
        energy = {"power_w": power_w, "radio_power_w": radio_power_w}
        summary = _run_offload(
            bundle, input_path, offload_url, keep, codec, token_file, timeout_s, batch,
            spec, energy, explain,
        )  # fmt: skip
        if out_path:
            from ponder._core.report import write_json

            click.echo(f"wrote {write_json(out_path, summary)}")
        return
    summary = _run(
        bundle,
        input_path,
        backend,
        backend_options(backend, threads, int8, providers, device),
        policy_file,
        latency_ms,
        energy_mj,
        deadline_ms,
        batch,
        power_w,
    )
    if out_path:
        from ponder._core.report import write_json

        click.echo(f"wrote {write_json(out_path, summary)}")


def _run(
    bundle,
    input_path,
    backend,
    options,
    policy_file,
    latency_ms,
    energy_mj,
    deadline_ms,
    batch,
    power_w,
) -> dict:
    from ponder.runtime import (
        Engine,
        PolicySpec,
        detect_probes,
        load_policy,
        read_state,
        run_requests,
    )

    engine = Engine.load(bundle, backend, **options)
    click.echo(f"{bundle}: {engine.backend.description}")
    click.echo(
        "costs: "
        + (
            f"{engine.costs.device} (ponder profile)"
            if engine.costs
            else "no cost table; run `ponder profile` for latency-aware policies"
        )
    )
    inputs, labels = load_inputs(input_path, [t.name for t in engine.bundle.manifest.inputs])
    policy, read = None, None
    if policy_file or latency_ms or energy_mj:
        spec = load_policy(policy_file) if policy_file else PolicySpec.simple(latency_ms, energy_mj)
        policy = engine.policy(spec, power_w=power_w)
        probes = {k: v for k, v in detect_probes().items() if not isinstance(v, str)}
        click.echo(f"device state from: {sorted(probes) or 'no probe (unknown battery)'}")
        read = lambda: read_state(probes)  # noqa: E731
    report = run_requests(
        engine,
        inputs,
        policy=policy,
        batch=batch,
        deadline_ms=deadline_ms,
        read_state=read,
        on_switch=_echo_switch,
    )
    summary = report.summary(len(engine.stages), labels)
    _echo_summary(summary, engine)
    return {
        "bundle": str(bundle),
        "backend": engine.backend.description,
        "summary": summary,
        "switches": report.switches,
        "exit_stage": report.exit_stage.tolist(),
        "prediction": None if report.prediction is None else report.prediction.tolist(),
    }


def _echo_switch(decision) -> None:
    click.echo(f"policy -> {decision.point.name!r}:")
    for line in decision.reasons:
        click.echo(f"  {line}")


def _echo_summary(s: dict, engine) -> None:
    lat = s["latency_ms"]
    click.echo(
        f"{s['requests']} requests, {s['samples']} samples; exits per stage "
        f"{s['exits_per_stage']}"
        + (
            f"; {s['answered_by_deadline']} answered at the deadline"
            if s["answered_by_deadline"]
            else ""
        )
    )
    click.echo(
        f"latency per request: p50 {lat['p50']:.3f} ms, p95 {lat['p95']:.3f} ms, "
        f"p99 {lat['p99']:.3f} ms, max {lat['max']:.3f} ms"
    )
    energy = s["energy_mj_per_sample"]
    click.echo(
        "energy: "
        + (
            s["energy_basis"]
            if energy is None
            else f"{energy:.3f} mJ per sample ({s['energy_basis']})"
        )
    )
    if s["experts_per_token_layer"] is not None:
        click.echo(f"experts per token and MoE layer: {s['experts_per_token_layer']:.2f}")
    if "accuracy" in s:
        click.echo(f"accuracy: {s['accuracy']:.2%}")


def _spec(policy_file, latency_ms, energy_mj):
    """The policy the options give, or None."""
    from ponder.runtime import PolicySpec, load_policy

    if policy_file:
        return load_policy(policy_file)
    if latency_ms is not None or energy_mj is not None:
        return PolicySpec.simple(latency_ms=latency_ms, energy_mj=energy_mj)
    return None


def _run_offload(
    bundle, input_path, url, keep, codec, token_file, timeout_s, batch, spec, energy, explain
) -> dict:
    """Every `batch` rows as one request through `ponder.runtime.Offloader`; with `spec`, where
    an OffloadPolicy decides (energy: power_w and radio_power_w)."""
    import time
    from pathlib import Path

    import numpy as np

    from ponder.runtime import Offloader

    token = Path(token_file).read_text().strip() if token_file else None
    device = Offloader(bundle, url, token=token, timeout_s=timeout_s)
    names = [i["name"] for i in device.split.manifest["edge"]["inputs"]]
    inputs, labels = load_inputs(input_path, names)
    arrays = inputs if isinstance(inputs, dict) else {names[0]: inputs}
    rows = len(next(iter(arrays.values())))
    sources: dict[str, int] = {}
    chosen: dict[str, int] = {}
    predictions, ms, sent, errors = [], [], 0, []
    try:
        policy = None if spec is None else device.policy(spec, **energy)
        for start in range(0, rows, batch):
            chunk = {k: v[start : start + batch] for k, v in arrays.items()}
            t0 = time.perf_counter()
            result = device.run(chunk, keep=keep, codec=codec, policy=policy)
            ms.append((time.perf_counter() - t0) * 1e3)
            sources[result.source] = sources.get(result.source, 0) + 1
            d = result.decision
            if d is not None:
                name = d.point.name + (" (probe)" if d.probe else "")
                if explain and name not in chosen:
                    click.echo(f"request {len(ms)}: {name}")
                    click.echo("\n".join(f"  {line}" for line in d.reasons))
                chosen[name] = chosen.get(name, 0) + 1
            predictions.append(result.prediction)
            sent += result.bytes_sent
            if result.error and result.error not in errors:
                errors.append(result.error)
    finally:
        device.close()
    prediction = np.concatenate(predictions)
    summary = {
        "requests": len(ms), "rows": rows, "sources": sources,
        "latency_ms": {q: float(np.percentile(ms, int(q[1:]))) for q in ("p50", "p90", "p99")},
        "payload_bytes_per_row": sent / rows, "link": device.client.link.to_dict(),
        "errors": errors,
    }  # fmt: skip
    if chosen:
        summary["decisions"] = chosen
    if labels is not None:
        summary["accuracy"] = float((prediction == np.asarray(labels)).mean())
    click.echo(
        f"{len(ms)} requests of {batch} rows: answered by {sources}; latency ms p50 "
        f"{summary['latency_ms']['p50']:.2f}, p99 {summary['latency_ms']['p99']:.2f}; "
        f"{summary['payload_bytes_per_row']:.0f} payload bytes a row"
        + (f"; accuracy {summary['accuracy']:.2%}" if labels is not None else "")
    )
    if chosen:
        click.echo(f"policy chose: {chosen}")
    for error in errors:
        click.echo(f"fell back after: {error}")
    return summary


def load_inputs(path: str, names: list[str]):
    """(inputs, labels or None) from a .npy or .npz file."""
    import numpy as np

    data = np.load(path)
    if not hasattr(data, "files"):
        return data, None
    labels = next((data[k] for k in ("y", "labels") if k in data.files), None)
    arrays = [k for k in data.files if k not in ("y", "labels")]
    if set(names) <= set(arrays):
        picked = {k: data[k] for k in names}
    elif len(names) == 1 and len(arrays) == 1:
        picked = {names[0]: data[arrays[0]]}
    else:
        raise click.UsageError(f"{path} holds arrays {arrays}; the bundle takes {names}")
    return (picked[names[0]] if len(names) == 1 else picked), labels
