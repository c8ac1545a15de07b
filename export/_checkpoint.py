"""Export a saved checkpoint: sample inputs, exit rule and operating points come from the data
set and calibration the checkpoint recorded; prints a per-stage table at the end."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ponder._calibration.evaluate import exit_data
from ponder._calibration.points import measure_point, operating_points
from ponder._convert.calls import Inputs, num_samples, take
from ponder._convert.checkpoint import load, read_config
from ponder._core.errors import ConfigError
from ponder._core.report import format_table
from ponder._early_exit.flops import ExitCosts, count_costs
from ponder._early_exit.stack import ATTR
from ponder._moe.config import moe_layers
from ponder.data.datasets import load_dataset
from ponder.export._bundle import export_bundle
from ponder.models.pretrained import recorded_splits

__all__ = ["exit_rule_and_points", "export_checkpoint", "stage_table"]

SAMPLE_ROWS = 8  # rows traced with and stored for `ponder verify`
CALIB_BATCH = 128  # rows per int8 calibration batch
EVAL_ROWS = 512  # calibration rows a split bundle's offload points are measured on


def export_checkpoint(
    path: str | Path,
    out: str | Path,
    *,
    target: str = "all",
    data: str | None = None,
    moe: str = "grouped",
    quantize: str | None = None,
    max_batch: int | None = None,
    max_tokens: int | None = None,
    split: int | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export the checkpoint at `path` into the bundle directory `out`; return the manifest.
    With quantize="int8", the data set's calibration split calibrates the int8 files and its
    test split measures every exit's accuracy in fp32 and int8. max_batch, max_tokens: as for
    `export_bundle` (a `ponder convert` checkpoint's tokens default to its data's max length).
    split: a split bundle instead (`export_split`), split after this block unless the
    checkpoint already has a split (`ponder.SplitConfig`)."""
    meta = read_config(path)
    extra = meta.get("extra") or {}
    if split is not None or _has_split(path):
        if quantize or moe != "grouped" or max_batch is not None:
            raise ConfigError(
                "a split bundle takes --target and --max-tokens only (no --quantize, --moe, "
                "--max-batch)"
            )
        return _export_split(path, out, meta, data, split, target, max_tokens, echo)
    bounds = {"max_batch": max_batch, "max_tokens": max_tokens}
    if meta.get("source", {}).get("kind") == "transformers":
        if extra.get("data_files"):
            if max_tokens is None and extra["data_files"].get("main_input") == "input_ids":
                bounds["max_tokens"] = extra["data_files"].get("max_length")
            splits = _data_splits(path, meta, data)
            return _export_classifier(path, out, meta, splits, target, moe, quantize, bounds, echo)
        if quantize:
            raise ConfigError(
                "int8 export of a sentence encoder (no classifier, so no accuracy to check it "
                "against) is not offered; drop --quantize"
            )
        return _export_text(path, out, meta, target, moe, bounds, echo)
    splits = _data_splits(path, meta, data)
    return _export_classifier(path, out, meta, splits, target, moe, quantize, bounds, echo)


def _data_splits(path: str | Path, meta: dict[str, Any], data: str | None) -> Any:
    """The data a classifier checkpoint was trained on (its sample inputs and operating points
    come from the calibration split): the recorded data files of a `ponder convert`-ed
    transformers folder, else `data` or the data set the checkpoint names."""
    if meta.get("source", {}).get("kind") == "transformers":
        return recorded_splits(meta, data)
    spec = {"name": data} if data else dict((meta.get("extra") or {}).get("data") or {})
    if "name" not in spec:
        raise ConfigError(
            f"{path} does not say which data set it was trained on; pass --calib-data NAME "
            "(sample inputs and the operating points come from its calibration split)"
        )
    return load_dataset(spec.pop("name"), **spec)


def _export_classifier(
    path, out, meta, splits, target: str, moe: str, quantize: str | None, bounds, echo
) -> dict[str, Any]:
    """Samples, operating points and int8 calibration from the calibration split, int8
    accuracy on the test split; a tensor input is named "x", keyword inputs keep their names.
    A classifier `ponder convert` made from a transformers folder comes with the splits of its
    recorded data files (or of another file in the same format), tokenized by the folder's
    tokenizer (keyword inputs)."""
    model = load(path).eval()
    echo(
        f"{path}: exporting with samples and operating points from {splits.name} "
        f"({len(splits.calib)} calibration samples)"
    )
    rule, points = exit_rule_and_points(model, splits, meta.get("extra") or {})
    manifest = export_bundle(
        model,
        _keyed(take(splits.calib.x, slice(0, SAMPLE_ROWS))),
        out,
        target=target,
        model_id=Path(path).name,
        exit_rule=rule,
        operating_points=points,
        config=_config(path, meta),
        moe=moe,
        echo=echo,
        quantize=quantize,
        calibration=[_keyed(b) for b in _batches(splits.calib.x)],
        held_out=(_keyed(splits.test.x), splits.test.y),
        **bounds,
    )
    return _summary(manifest, Path(out), echo)


def _keyed(x: Any) -> dict[str, Any]:
    return dict(x) if isinstance(x, Mapping) else {"x": x}


def _batches(x: Any) -> list[Any]:
    """int8 calibration batches of CALIB_BATCH rows each."""
    rows = num_samples(x)
    return [take(x, slice(i, i + CALIB_BATCH)) for i in range(0, rows, CALIB_BATCH)]


def _export_text(
    path, out, meta: dict[str, Any], target: str, moe: str, bounds, echo
) -> dict[str, Any]:
    """A text encoder: sample inputs are standard-library docstrings, tokenized with padding."""
    from ponder.models.text import load_source_encoder, stdlib_docstrings

    model = load(path).eval()
    _, tokenizer = load_source_encoder(meta["source"])
    texts = stdlib_docstrings(SAMPLE_ROWS)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    echo(f"{path}: exporting a text encoder with {len(texts)} docstrings as sample inputs")
    manifest = export_bundle(
        model,
        inputs,
        out,
        target=target,
        model_id=Path(path).name,
        config=_config(path, meta),
        moe=moe,
        echo=echo,
        **bounds,
    )
    return _summary(manifest, Path(out), echo)


def _has_split(path: str | Path) -> bool:
    entries = read_config(path).get("conversions") or []
    return any(e.get("config", {}).get("type") == "split" for e in entries)


def _export_split(path, out, meta, data, block, target, max_tokens, echo) -> dict[str, Any]:
    """A split bundle of the checkpoint, with sample inputs as its bundle export would take
    them; a sentence encoder is split inside `MeanPooled` (its output is the embedding)."""
    from ponder._convert.convert import convert_
    from ponder._split.config import SplitConfig
    from ponder._split.link import ATTR, without_split
    from ponder.export._split import export_split
    from ponder.models.text import MeanPooled, load_source_encoder, stdlib_docstrings

    model = load(path).eval()
    extra = meta.get("extra") or {}
    source = meta.get("source", {})
    local: dict[str, Any] = {}
    if source.get("kind") == "transformers" and not extra.get("data_files"):
        _, tokenizer = load_source_encoder(source)
        texts = stdlib_docstrings(SAMPLE_ROWS)
        batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if getattr(model, ATTR, None) is not None:
            raise ConfigError(
                "split a sentence encoder at export (--split K), not in the checkpoint: the "
                "split goes inside the mean pooling"
            )
        model = MeanPooled(model).eval()
    else:
        splits = _data_splits(path, meta, data)
        inputs = _keyed(take(splits.calib.x, slice(0, SAMPLE_ROWS)))
        # the local bundle's exit rule and operating points, as `ponder export` gives them
        rule, points = exit_rule_and_points(without_split(model), splits, extra)
        rows = slice(0, EVAL_ROWS)
        evaluation = (_keyed(take(splits.calib.x, rows)), torch.as_tensor(splits.calib.y[rows]))
        local = {"exit_rule": rule, "operating_points": points, "evaluation": evaluation}
    existing = getattr(model, ATTR, None)
    if existing is None:
        if block is None:
            raise ConfigError("pass --split K: the block after which the device hands over")
        convert_(model, SplitConfig(block=block))
    elif block is not None and block != existing.spec["block"]:
        raise ConfigError(
            f"{path} is split after block {existing.spec['block']}, not {block}; drop --split "
            "or convert the model before the split again"
        )
    echo(f"{path}: exporting a split bundle with {SAMPLE_ROWS} sample inputs")
    manifest = export_split(
        model, inputs, out, target="onnx" if target == "onnx" else "all",
        model_id=Path(path).name, max_tokens=max_tokens or 128, echo=echo, **local,
    )  # fmt: skip
    return manifest


def _config(path: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's config, and where it was (the runtime's torch backend loads it)."""
    return {"checkpoint": meta, "checkpoint_path": str(Path(path).resolve())}


def exit_rule_and_points(model: torch.nn.Module, splits: Any, extra: dict[str, Any]):
    """The exit rule (with the recorded risk-controlled threshold) and the operating points of
    shared thresholds, measured on the calibration split; for MoE models with the dynamic-k
    gate, at every tau of TAU_GRID and the model's own (the runtime sets tau per request)."""
    stack = getattr(model, ATTR, None)
    if stack is None:
        return None, []
    early = stack.num_exits - 1
    name = extra.get("rule", "max_prob")
    risk = (extra.get("risk_control") or {}).get("threshold")
    rule = {
        "name": name,
        "ensembled": stack.ensembled,
        "thresholds": None if risk is None else [float(risk)] * early,
    }
    own, points, reference = _own_tau(model), [], None
    for tau in _taus(own):
        with _gate_tau(model, tau):
            x = take(splits.calib.x, slice(0, SAMPLE_ROWS))
            costs = count_costs(model, x) if tau is None else _mean_costs(model, x)
            calib = exit_data(model, splits.calib.x, splits.calib.y, costs, rule=name)
        reference = reference or costs.full  # tau 0 first: every expert, the dense FLOPs
        scale = costs.full / reference
        points += operating_points(calib, by_stage=True, moe_tau=tau, flops_scale=scale)
        if risk is not None and tau == own:
            points.append(
                measure_point(
                    calib,
                    "risk_controlled",
                    tuple(rule["thresholds"]),
                    moe_tau=tau,
                    flops_scale=scale,
                    risk_control=extra["risk_control"],
                )
            )
    # the manifest stores thresholds as numbers (an infinite one as Infinity, as in exit_rule)
    return rule, [{**p.to_dict(), "thresholds": list(p.thresholds)} for p in points]


TAU_GRID = (0.0, 0.2, 0.4, 0.6, 0.8)  # dynamic-k tau: 0 keeps every expert, 1 only the best


def _own_tau(model: torch.nn.Module) -> float | None:
    """The dynamic-k tau the model was converted with (None: no MoE, or another gate)."""
    layers = list(moe_layers(model).values())
    if not layers or any(layer.gate != "dynamic_k" for layer in layers):
        return None
    return float(layers[0].gate_params["tau"])


def _taus(own: float | None) -> list[float | None]:
    return [None] if own is None else sorted({*TAU_GRID, own})


@contextlib.contextmanager
def _gate_tau(model: torch.nn.Module, tau: float | None) -> Iterator[None]:
    """Every MoE layer at dynamic-k `tau` within the block (nothing to do for None)."""
    layers = list(moe_layers(model).values()) if tau is not None else []
    before = [dict(layer.gate_params) for layer in layers]
    for layer in layers:
        layer.gate_params = {"tau": tau}
    try:
        yield
    finally:
        for layer, params in zip(layers, before, strict=True):
            layer.gate_params = params


def _mean_costs(model: torch.nn.Module, x: Inputs) -> ExitCosts:
    """Per-exit FLOPs averaged over the rows of `x` (count_costs counts one sample, and MoE
    layers run a different number of experts for each)."""
    each = [count_costs(model, take(x, slice(i, i + 1))) for i in range(num_samples(x))]
    mean = lambda values: tuple(float(np.mean(v)) for v in zip(*values, strict=True))  # noqa: E731
    return ExitCosts(
        mean(c.backbone for c in each), each[0].heads, float(np.mean([c.full for c in each]))
    )


def _summary(manifest: dict[str, Any], out: Path, echo) -> dict[str, Any]:
    echo(stage_table(manifest, out))
    accuracy = (manifest["quantization"] or {}).get("accuracy") or {}
    for fmt, result in accuracy.items():
        rows = [
            [
                r["output"],
                f"{r['fp32']:.2%}",
                f"{r['int8']:.2%}",
                f"{100 * r['change']:+.2f}",
                f"{r['agreement']:.1%}",
            ]
            for r in result["exits"]
        ]
        echo(
            f"int8 vs fp32 ({fmt}, {result['samples']} held-out samples, every sample through every exit):"
        )
        echo(format_table(["exit", "fp32", "int8", "change (pp)", "same prediction"], rows))
    if manifest["moe"] is not None:
        layers = len(manifest["moe"]["layers"])
        echo(f"MoE layers ({layers}): {manifest['moe']['execution']['pte']}")
    return manifest


def stage_table(manifest: dict[str, Any], root: Path) -> str:
    """stage, blocks, FLOPs (share of the whole model), parameters, ONNX size, max error."""
    report = json.loads((root / manifest["config"]["export"]["validation"]).read_text())
    total = manifest["stages"][-1]["cumulative_flops"] or 1
    formats = [
        f
        for f in ("pte", "onnx", "pte-int8", "onnx-int8")
        if any(c["format"] == f for c in report["comparisons"])
    ]
    rows = []
    for s in manifest["stages"]:
        errors = {
            c["format"]: c["max_abs_error"]
            for c in report["comparisons"]
            if c["stage"] == s["index"]
        }
        size = manifest["files"].get(s["onnx"] or "", {}).get("bytes")
        rows.append(
            [
                s["index"],
                ",".join(map(str, s["blocks"])) or "-",
                s["flops"],
                f"{s['cumulative_flops'] / total:.1%}",
                s["params"],
                "-" if size is None else f"{size / 1e3:.1f} kB",
                *(f"{errors[f]:.1e}" if f in errors else "-" for f in formats),
            ]
        )
    headers = [
        "stage",
        "blocks",
        "FLOPs",
        "cumulative",
        "params",
        "ONNX size",
        *(f"max err {f}" for f in formats),
    ]
    return format_table(headers, rows)
