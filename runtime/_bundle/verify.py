"""`verify_bundle`: re-check a bundle on disk without torch — hashes, schema, version, digest, and
every stage of every format run by the runtime backends on the stored sample inputs (the whole
batch and a batch of one) against the stored eager outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ponder._core.errors import BundleError, MissingDependencyError
from ponder.runtime._backends.base import Backend, load_backend
from ponder.runtime._bundle.bundle import Bundle
from ponder.runtime._bundle.compare import Comparison, check_comparisons, compare_outputs
from ponder.runtime._bundle.layout import PTE

__all__ = ["Verification", "verify_bundle"]

# ONNX files are checked on the CPU provider: the fp32 tolerance was set on it, and GPU
# providers may compute in TF32.
_ONNX_CPU = {"providers": ["CPUExecutionProvider"]}


@dataclass(frozen=True)
class Verification:
    """What `verify_bundle` checked: one row per stage output, format and batch, and the files
    it could not execute here, each with the reason (a runtime that is not installed)."""

    root: Path
    rows: list[Comparison]
    not_executed: dict[str, str] = field(default_factory=dict)


def verify_bundle(
    path: str | Path, echo: Callable[[str], None] = print, *, require_all: bool = False
) -> Verification:
    """Raise BundleError (files, manifest) or ExportMismatchError (results).

    A format whose runtime is not installed here (the ExecuTorch runtime needs torch) is not
    executed: a line says so and what to install, and it is listed in `not_executed`; its
    sha256 has still been checked. With `require_all` that raises MissingDependencyError
    instead, as it does when no file of the bundle can be executed at all.
    """
    bundle = Bundle.open(path)  # sizes, sha256, schema, manifest digest, stage wiring
    manifest = bundle.manifest
    echo(
        f"{bundle.root}: manifest {manifest.schema_version} valid, {len(manifest.files)} files "
        "match their sha256"
    )
    targets = _targets(bundle)
    if not targets:
        raise BundleError(f"bundle {bundle.root} has neither {PTE} nor ONNX files to run")
    samples = _samples(bundle)
    rows: list[Comparison] = []
    not_executed: dict[str, MissingDependencyError] = {}
    for label, backend_name, options, fmt, precision in targets:
        try:
            backend = load_backend(backend_name, bundle, **options)
        except MissingDependencyError as e:
            if require_all:
                raise
            not_executed[label] = e
            echo(f"{label}: NOT executed here, only its sha256 was checked: {e}")
            continue
        ran = [
            *_run(backend, bundle, samples, None, fmt, precision),
            *_run(backend, bundle, samples, 1, fmt, precision),
        ]
        where = "onnxruntime, CPU provider" if backend_name == "onnxruntime" else backend_name
        echo(
            f"{label}: {len(manifest.stages)} stages run ({where}), max |error| "
            f"{max(r.max_abs_error for r in ran):.2g}"
        )
        rows += ran
    if not rows:  # nothing could run: a check that executed nothing is no check
        raise next(iter(not_executed.values()))
    check_comparisons(rows)
    formats = sorted({r.format for r in rows})
    batch = len(samples[manifest.inputs[0].name])
    echo(
        f"ran {len(manifest.stages)} stages of {', '.join(formats)} at batch {batch} and 1: all "
        f"outputs within tolerance (max |error| {max(r.max_abs_error for r in rows):.2g})"
    )
    return Verification(bundle.root, rows, {k: str(v) for k, v in not_executed.items()})


def _targets(bundle: Bundle) -> list[tuple[str, str, dict[str, Any], str, str]]:
    """(files in words, backend, its options, format, precision) for each format the bundle has."""
    manifest = bundle.manifest
    quantization = manifest.quantization or {}
    targets = []
    if PTE in manifest.files:
        targets.append((PTE, "executorch", {}, "pte", "fp32"))
    onnx = manifest.stages[0].onnx
    if onnx is not None:
        folder = onnx.rsplit("/", 1)[0] + "/" if "/" in onnx else "ONNX stage files"
        targets.append((folder, "onnxruntime", _ONNX_CPU, "onnx", "fp32"))
    if "pte" in quantization:
        targets.append((quantization["pte"], "executorch", {"int8": True}, "pte-int8", "int8"))
    if "onnx_dir" in quantization:
        targets.append(
            (
                quantization["onnx_dir"].rstrip("/") + "/",
                "onnxruntime",
                {**_ONNX_CPU, "int8": True},
                "onnx-int8",
                "int8",
            )
        )
    return targets


def _run(
    backend: Backend,
    bundle: Bundle,
    samples: dict[str, np.ndarray],
    batch: int | None,
    fmt: str,
    precision: str,
) -> list[Comparison]:
    """Each stage on its own stored inputs (not chained), every output against eager's; `batch`
    None takes the stored batch, 1 its first row (the batch dimension is dynamic)."""
    rows = []
    for stage in bundle.manifest.stages:
        feeds = {t.name: backend.from_numpy(_rows(samples, t.name, batch)) for t in stage.inputs}
        got = {k: backend.to_numpy(v) for k, v in backend.run_stage(stage.index, feeds).items()}
        expected = {t.name: _rows(samples, t.name, batch) for t in stage.outputs}
        rows += compare_outputs(fmt, stage.index, got, expected, precision)
    return rows


def _samples(bundle: Bundle) -> dict[str, np.ndarray]:
    path = bundle.samples_path
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise BundleError(f"cannot read the sample inputs {path.name} of {bundle.root}: {e}") from e


def _rows(samples: dict[str, np.ndarray], name: str, rows: int | None) -> np.ndarray:
    if name not in samples:
        raise BundleError(f"the bundle's samples have no tensor {name!r}; re-export the bundle")
    return samples[name] if rows is None else samples[name][:rows]
