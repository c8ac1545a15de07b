"""`export_bundle`: stages -> samples, then each format of `FORMATS` (model.pte,
onnx/stage_<i>.onnx) and its int8 copy, each run by its runtime backend on the sample inputs and
compared with eager before the manifest is written."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ponder
from ponder._core.errors import ConfigError
from ponder._early_exit.flops import module_flops
from ponder._moe.config import moe_layers
from ponder.export._formats.onnx import OPSET
from ponder.export._formats.registry import FORMATS
from ponder.export._int8.bundle import check_int8, write_int8
from ponder.export._stages.plan import MOE_TAU, Stage, StageIO, StagePlan, plan_stages, run_stages
from ponder.export._stages.trace import export_stage, symbolic_shapes
from ponder.export._validate import TOLERANCES, Comparison, check_comparisons, numpy_arrays
from ponder.runtime import FORMAT, SCHEMA_VERSION, write_manifest
from ponder.runtime._bundle.layout import (
    INT8_ONNX_DIR,
    INT8_PTE,
    MANIFEST,
    ONNX_DIR,
    PTE,
    REPORT,
    SAMPLES,
    onnx_file,
    stage_method,
)

__all__ = ["TARGETS", "export_bundle"]

TARGETS = ("xnnpack", "portable", "onnx", "all")
Echo = Callable[[str], None]


def export_bundle(
    model: torch.nn.Module,
    sample_inputs: torch.Tensor | dict[str, torch.Tensor],
    out: str | Path,
    *,
    target: str = "all",
    model_id: str = "model",
    exit_rule: dict[str, Any] | None = None,
    operating_points: Sequence[dict[str, Any]] = (),
    config: dict[str, Any] | None = None,
    moe: str = "grouped",
    quantize: str | None = None,
    calibration: list[dict[str, torch.Tensor]] | None = None,
    held_out: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None,
    max_batch: int | None = None,
    max_tokens: int | None = None,
    echo: Echo = print,
) -> dict[str, Any]:
    """Write a device bundle for `model` into `out` and return its manifest.

    sample_inputs: a batch (>= 2 rows) of real inputs: traced with, validated on and stored in
    the bundle for `ponder verify`. The model is not changed (stages are cut from a copy).
    exit_rule: {"name", "ensembled", "thresholds"}; operating_points: rows for the policy.
    moe: how MoE layers run in the exported files, "grouped" (skips unselected experts) or
    "masked" (computes every expert, zeroes the unselected; fixed shapes).
    quantize: None or "int8" (post-training, calibrated on `calibration`, a list of input
    batches); with `held_out` (inputs, labels) every exit's int8 accuracy is reported next to
    fp32 in the manifest's `quantization` section.
    max_batch, max_tokens: the largest batch and token count the stages take (ExecuTorch plans
    its memory for them; the engine splits larger batches). None: 256 rows for Sequential
    models; 64 rows and 128 tokens (at most the position table) for transformers.
    """
    if quantize not in (None, "int8"):
        raise ConfigError(f"quantize={quantize!r}: ponder quantizes to 'int8' (or None)")
    targets = _targets(target)
    inputs = sample_inputs if isinstance(sample_inputs, dict) else {"x": sample_inputs}
    _check_samples(inputs)
    out = Path(out)
    _clear_previous_export(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_stages(model, moe, inputs, max_batch=max_batch, max_tokens=max_tokens)
    if list(inputs) != plan.model_inputs:
        raise ConfigError(f"the model takes inputs {plan.model_inputs}, got {list(inputs)}")
    _check_rows(inputs, plan.bounds["batch"][1])
    runs = run_stages(plan, inputs)
    tokens = plan.bounds.get("tokens")
    echo(
        f"{len(plan.stages)} stages ({plan.family}); tracing each with a dynamic batch "
        f"(1..{plan.bounds['batch'][1]})" + (f" and tokens (1..{tokens[1]})" if tokens else "")
    )
    programs = _trace(plan, runs, echo)
    specs = [_stage_specs(s, p, r) for s, p, r in zip(plan.stages, programs, runs, strict=True)]
    meta = _device_metadata(plan, specs, model_id)
    files, rows = [SAMPLES], []
    _save_samples(out / SAMPLES, {**plan.controls, **inputs}, runs)
    fresh = True  # no format has written the programs traced above yet
    for name, option in targets.items():
        fmt = FORMATS.get(name)
        if not fresh:  # the previous format's lowering consumed the programs: trace again
            programs = _trace(plan, runs, lambda line: None)
        written = fmt.write(plan, programs, out, option, meta, echo)
        fresh = not fmt.consumes_programs
        rows += fmt.check([out / f for f in written], plan_io(plan), runs, "fp32")
        files += written
    onnx_files = [onnx_file(i) for i in range(len(plan.stages))]
    quantization = None
    if quantize == "int8":
        written, quantization = write_int8(
            plan, out, targets, onnx_files, calibration, held_out, meta, echo
        )
        rows += check_int8(out, quantization, onnx_files, plan_io(plan), runs)
        files += written
    report = _report(rows, targets)
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    files.append(REPORT)
    check_comparisons(rows)
    manifest = _manifest(
        plan,
        specs,
        runs,
        model_id=model_id,
        exit_rule=exit_rule,
        points=operating_points,
        config=config,
        targets=targets,
        onnx_files=onnx_files if "onnx" in targets else None,
        moe=moe,
        quantization=quantization,
    )
    return write_manifest(out, manifest, files)


def _clear_previous_export(out: Path) -> None:
    """Remove what an earlier export wrote into `out` (and nothing else), so that a re-export
    without int8 or ONNX leaves no stale files of the earlier one behind."""
    for name in (MANIFEST, PTE, INT8_PTE, SAMPLES, REPORT):
        (out / name).unlink(missing_ok=True)
    for folder in (ONNX_DIR, INT8_ONNX_DIR):
        shutil.rmtree(out / folder, ignore_errors=True)


def _trace(plan: StagePlan, runs: list[dict], echo: Echo) -> list[Any]:
    """torch.export of every stage on its eager inputs. ExecuTorch lowering changes the
    programs it is given (seen here: the ONNX export of an MoE stage then failed on unbacked
    symbols), so each format gets programs of its own."""
    programs = []
    for i, (stage, run) in enumerate(zip(plan.stages, runs, strict=True)):
        started = time.perf_counter()
        programs.append(export_stage(stage, tuple(run["inputs"].values()), plan.bounds))
        echo(f"  stage {i}: torch.export ok ({time.perf_counter() - started:.1f} s)")
    return programs


def plan_io(plan: StagePlan) -> StageIO:
    return [(s.inputs, s.outputs) for s in plan.stages]


def _targets(target: str) -> dict[str, str]:
    if target not in TARGETS:
        raise ConfigError(f"target {target!r} is not one of {list(TARGETS)}")
    return {
        "xnnpack": {"pte": "xnnpack"},
        "portable": {"pte": "portable"},
        "onnx": {"onnx": "cpu"},
        "all": {"pte": "xnnpack", "onnx": "cpu"},
    }[target]


def _check_samples(inputs: dict[str, torch.Tensor]) -> None:
    for name, value in inputs.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            raise ConfigError(
                f"sample input {name!r} must be a batched tensor, got {type(value).__name__}"
            )
        if value.shape[0] < 2:
            raise ConfigError(
                f"sample input {name!r} has {value.shape[0]} rows; give at least 2 (a batch of "
                "one would make torch.export treat the batch size as fixed)"
            )


def _takes_tokens(specs: list[dict]) -> bool:
    """Whether any stage input has a dynamic token dimension (text models)."""
    return any("tokens" in t["shape"] for spec in specs for t in spec["inputs"])


def _check_rows(inputs: dict[str, torch.Tensor], max_batch: int) -> None:
    for name, value in inputs.items():
        if value.shape[0] > max_batch:
            raise ConfigError(
                f"sample input {name!r} has {value.shape[0]} rows, more than the largest batch "
                f"the stages take ({max_batch}); pass fewer rows or raise max_batch"
            )


def _save_samples(path: Path, inputs: dict[str, torch.Tensor], runs: list[dict]) -> None:
    """Model inputs (and control inputs such as moe_tau) and every stage's eager outputs
    (names are unique across the pipeline)."""
    arrays = numpy_arrays(inputs)
    for run in runs:
        arrays.update(numpy_arrays(run["outputs"]))
    with path.open("wb") as f:
        np.savez(f, **arrays)


def _stage_specs(stage: Stage, program: Any, run: dict) -> dict[str, list[dict[str, Any]]]:
    """Name, dtype and shape (dynamic dimensions by name) of a stage's inputs and outputs."""
    shapes = dict(zip(("inputs", "outputs"), symbolic_shapes(program, stage), strict=True))
    return {
        side: [
            {"name": name, "dtype": str(value.dtype).removeprefix("torch."), "shape": shape}
            for (name, value), shape in zip(run[side].items(), shapes[side], strict=True)
        ]
        for side in ("inputs", "outputs")
    }


def _model_inputs(specs: list[dict[str, list]], names: list[str]) -> list[dict[str, Any]]:
    first = {}
    for spec in specs:
        for tensor in spec["inputs"]:
            first.setdefault(tensor["name"], tensor)
    return [first[name] for name in names]


def _device_metadata(plan: StagePlan, specs: list[dict], model_id: str) -> dict[str, Any]:
    """What the device can read from the program itself (the manifest has the rest)."""
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "model_id": model_id,
        "classes": plan.classes,
        "methods": [stage_method(i) for i in range(len(plan.stages))],
        "task": plan.task,
        "inputs": _model_inputs(specs, plan.model_inputs),
        "outputs": [s.outputs for s in plan.stages],
        "max_batch": plan.bounds["batch"][1],
    }


def _manifest(
    plan: StagePlan,
    specs: list[dict],
    runs: list[dict],
    *,
    model_id: str,
    exit_rule: dict[str, Any] | None,
    points: Sequence[dict[str, Any]],
    config: dict[str, Any] | None,
    targets: dict[str, str],
    onnx_files: list[str] | None,
    moe: str,
    quantization: dict[str, Any] | None,
) -> dict[str, Any]:
    """The manifest's content (write_manifest adds the files table and digests)."""
    stages, total = [], 0
    for i, (stage, spec, run) in enumerate(zip(plan.stages, specs, runs, strict=True)):
        flops = module_flops(stage.module, tuple(run["inputs"].values()))
        total += flops
        stages.append(
            {
                "index": i,
                "method": stage_method(i),
                "onnx": onnx_files[i] if onnx_files else None,
                "inputs": spec["inputs"],
                "outputs": spec["outputs"],
                "blocks": stage.blocks,
                "flops": flops,
                "cumulative_flops": total,
                "params": sum(p.numel() for p in stage.module.parameters()),
                "exit": stage.exit,
            }
        )
    early = any(stage.exit for stage in plan.stages)
    rule = exit_rule or {
        "name": "max_prob" if early else "none",
        "ensembled": False,
        "thresholds": None,
    }
    export_config = {
        "targets": targets,
        "onnx_opset": OPSET,
        "max_batch": plan.bounds["batch"][1],
        **({"max_tokens": plan.bounds["tokens"][1]} if _takes_tokens(specs) else {}),
        "tolerances": TOLERANCES,
        "samples": SAMPLES,
        "validation": REPORT,
    }
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "ponder_version": ponder.__version__,
        "model_id": model_id,
        "task": plan.task,
        "classes": plan.classes,
        "inputs": _model_inputs(specs, plan.model_inputs),
        "stages": stages,
        "exit_rule": rule,
        "operating_points": list(points),
        "moe": _moe(plan, moe),
        "quantization": quantization,
        "config": {**(config or {}), "export": export_config},
    }


# How MoE layers run in the exported files, in words for the manifest and the CLI.
MOE_EXECUTION = {
    "grouped": "grouped: each expert runs only on the tokens that selected it (nonzero -> "
    "gather -> matmuls -> scatter-add, sizes decided at run time); unselected experts cost nothing",
    "masked": "masked: every expert runs for every token and the unselected experts' outputs "
    "are zeroed; the results match the eager MoE, but no work is skipped",
}


def _moe(plan: StagePlan, mode: str) -> dict[str, Any] | None:
    layers = plan.moe_stages or [
        (i, layer)
        for i, stage in enumerate(plan.stages)
        for layer in moe_layers(stage.module).values()
    ]
    if not layers:
        return None
    first = layers[0][1]
    return {
        "gate": first.gate,
        "gate_params": dict(first.gate_params),
        "layers": [
            {
                "path": plan.moe_paths[id(layer)],
                "stage": i,
                "experts": layer.num_experts,
                "expert_size": layer.w1.shape[-1],
                "width": layer.w1.shape[1],
                "activation": layer.activation,
            }
            for i, layer in layers
        ],
        "mode": mode,
        "execution": {"pte": MOE_EXECUTION[mode], "onnx": MOE_EXECUTION[mode]},
        "tau_input": MOE_TAU if MOE_TAU in plan.controls else None,
    }


def _report(rows: list[Comparison], targets: dict[str, str]) -> dict[str, Any]:
    return {
        "targets": targets,
        "tolerances": TOLERANCES,
        "ok": all(r.ok for r in rows),
        "comparisons": [r.to_dict() for r in rows],
    }
