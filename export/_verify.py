"""`verify_bundle`: re-check a bundle on disk — hashes, schema, every method and ONNX stage run
on the stored sample inputs (whole batch and batch of one) against the stored eager outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ponder._errors import BundleError
from ponder.runtime import Bundle

from ._bundle import PTE, SAMPLES, run_onnx, run_pte
from ._pte import PteRunner
from ._validate import Comparison, check_comparisons

__all__ = ["verify_bundle"]


def verify_bundle(path: str | Path, echo: Callable[[str], None] = print) -> list[Comparison]:
    """Raise BundleError (files, manifest) or ExportMismatchError (results); return the rows."""
    bundle = Bundle.open(path)  # sizes, sha256, schema, manifest digest, stage wiring
    manifest = bundle.manifest
    echo(f"{bundle.root}: manifest {manifest.schema_version} valid, {len(manifest.files)} files "
         "match their sha256")  # fmt: skip
    samples = _samples(bundle)
    io = [([t.name for t in s.inputs], [t.name for t in s.outputs]) for s in manifest.stages]
    if PTE in manifest.files:
        _check_metadata(bundle, manifest)
    rows: list[Comparison] = []
    for rows_taken in (None, 1):  # the stored batch, then a batch of one (dynamic batch)
        runs = [{"inputs": {n: _rows(samples, n, rows_taken) for n in ins},
                 "outputs": {n: _rows(samples, n, rows_taken) for n in outs}} for ins, outs in io]  # fmt: skip
        if PTE in manifest.files:
            rows += run_pte(bundle.pte_path, io, runs)
        if manifest.stages[0].onnx is not None:
            rows += run_onnx([bundle.onnx_path(i) for i in range(len(io))], io, runs)
        quantization = manifest.quantization or {}
        if "pte" in quantization:
            rows += run_pte(bundle.int8_pte_path, io, runs, "int8")
        if "onnx_dir" in quantization:
            rows += run_onnx(
                [bundle.onnx_path(i, int8=True) for i in range(len(io))], io, runs, "int8"
            )
    if not rows:
        raise BundleError(f"bundle {bundle.root} has neither {PTE} nor ONNX files to run")
    check_comparisons(rows)
    worst = max(r.max_abs_error for r in rows)
    echo(f"ran {len(io)} stages x {len({r.format for r in rows})} formats at batch "
         f"{len(samples[io[0][0][0]])} and 1: all outputs within tolerance (max |error| {worst:.2g})")  # fmt: skip
    return rows


def _samples(bundle: Bundle) -> dict[str, np.ndarray]:
    name = (bundle.manifest.config.get("export") or {}).get("samples", SAMPLES)
    try:
        with np.load(bundle.path(name)) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise BundleError(f"cannot read the sample inputs {name} of {bundle.root}: {e}") from e


def _rows(samples: dict[str, np.ndarray], name: str, rows: int | None) -> np.ndarray:
    if name not in samples:
        raise BundleError(f"the bundle's samples have no tensor {name!r}; re-export the bundle")
    return samples[name] if rows is None else samples[name][:rows]


def _check_metadata(bundle: Bundle, manifest: Any) -> None:
    """The program's own metadata method must describe the same model as the manifest."""
    meta = PteRunner(bundle.pte_path).metadata()
    methods = [s.method for s in manifest.stages]
    if meta.get("model_id") != manifest.model_id or meta.get("methods") != methods:
        raise BundleError(
            f"{PTE} describes model {meta.get('model_id')!r} with methods {meta.get('methods')}, "
            f"the manifest {manifest.model_id!r} with {methods}: the files come from different "
            "exports; re-export the bundle"
        )
