"""`export_split`: a split bundle — the device half (the model up to its split block, returning
the hidden state and each token's selection score) as ONNX and ExecuTorch, the cloud half
(`tail/tail.onnx`, fed by tokens and their mask), and `split.json` describing the split, keep
levels and codecs. Both halves are run by `ponder.runtime.SplitBundle` on the sample inputs
through real payloads, per keep level and codec, and compared with the eager split model
before the manifest is written (see runtime/_offload/split.py for the layout)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ponder._core.errors import ConfigError
from ponder._split.link import split_link, without_split
from ponder._split.program import MASK, SplitModel, attention_ranking, split_model
from ponder.export._bundle import export_bundle
from ponder.export._formats.onnx import write_onnx_stage
from ponder.export._formats.pte import write_pte
from ponder.export._stages.graph import is_token_input
from ponder.export._stages.plan import Stage
from ponder.export._stages.trace import export_stage
from ponder.export._validate import torch_threads_kept
from ponder.runtime import list_codecs
from ponder.runtime._bundle.digest import sha256_file
from ponder.runtime._offload.split import (
    EDGE_ONNX,
    EDGE_PTE,
    HIDDEN,
    LOCAL,
    LOGITS,
    SCORES,
    SPLIT_FORMAT,
    SPLIT_MANIFEST,
    SPLIT_SAMPLES,
    SPLIT_SCHEMA,
    TAIL_ONNX,
    TOKENS,
    SplitBundle,
    keep_levels,
    sample_key,
    verify_split,
)

__all__ = ["DEFAULT_KEEPS", "export_split"]

DEFAULT_KEEPS = (1.0, 0.5, 0.25, 0.1)
MAX_BATCH = 64


class _EdgeStage(nn.Module):
    """The device half: the edge graph, then each token's score under the split's selector."""

    def __init__(self, split: SplitModel):
        super().__init__()
        self.split = split
        self.mask_at = split.edge_inputs.index(MASK) if MASK in split.edge_inputs else None

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.split
        out = s.edge(*inputs)
        hidden, count = out[0], s.attention.count
        if self.mask_at is not None:
            real = inputs[self.mask_at] != 0
        else:
            real = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        probs = s.attention_probs(tuple(out[len(out) - count :]), real)
        scores = attention_ranking(probs, real, s.config.selector, s.anchor)
        return hidden, scores


class _TailStage(nn.Module):
    """The cloud half: tokens [B, K, D] (and their mask [B, K]) -> logits."""

    def __init__(self, split: SplitModel):
        super().__init__()
        self.split = split

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.split.tail(*args)[0]


def export_split(
    model: nn.Module,
    sample_inputs: torch.Tensor | dict[str, torch.Tensor],
    out: str | Path,
    *,
    target: str = "all",
    keeps: Sequence[float] = DEFAULT_KEEPS,
    codecs: Sequence[str] | None = None,
    model_id: str = "model",
    max_tokens: int = 128,
    local: bool = True,
    exit_rule: dict[str, Any] | None = None,
    operating_points: Sequence[dict[str, Any]] = (),
    evaluation: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write the split bundle of `model` (converted with `ponder.SplitConfig`) into `out`.

    sample_inputs: a batch (>= 2 rows) of real inputs, traced with, checked on and stored for
    `ponder verify`. target: "all" (ONNX and ExecuTorch XNNPACK for the device half) or
    "onnx". keeps: the keep levels the device may choose (1.0 always among them); codecs: those
    it may use (default every one). local: also write `local/`, the model without the split
    as a device bundle (`export_bundle`, with its exits, `exit_rule` and `operating_points`),
    for the requests the device answers itself. evaluation: labelled inputs (those the local
    operating points were measured on): the accuracy and mean payload bytes of every keep ×
    codec, measured through the exported halves and real payloads, become the bundle's
    offload points (what `ponder.runtime.OffloadPolicy` chooses from). The model is not
    changed (the halves are cut from a copy).
    """
    if target not in ("all", "onnx"):
        raise ConfigError(f"target={target!r}: a split bundle's device half is 'all' or 'onnx'")
    inputs = sample_inputs if isinstance(sample_inputs, dict) else {"x": sample_inputs}
    rows = {int(v.shape[0]) for v in inputs.values()}
    if len(rows) != 1 or rows.pop() < 2:
        raise ConfigError("sample_inputs must be one batch of at least 2 rows")
    codecs = list(codecs or list_codecs())
    unknown = sorted(set(codecs) - set(list_codecs()))
    if unknown:
        raise ConfigError(f"unknown codecs {unknown}; known: {sorted(list_codecs())}")
    levels = keep_levels(keeps)
    model = _copy(model)
    link = split_link(model)
    split = split_model(model, inputs)
    out = Path(out)
    if out.exists():
        for name in (SPLIT_MANIFEST, EDGE_ONNX, EDGE_PTE, SPLIT_SAMPLES, "tail", LOCAL):
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    names = list(split.edge_inputs)
    tokens_max = min(max_tokens, int(max(v.shape[1] for v in inputs.values() if v.dim() >= 2)))
    token_inputs = [n for n in names if is_token_input(n, inputs[n])]
    bounds = {"batch": (1, MAX_BATCH), "tokens": (1, max(tokens_max, 2))}
    with torch.no_grad():
        edge = _EdgeStage(split).eval()
        hidden, scores = edge(*[inputs[n] for n in names])
    width = int(hidden.shape[-1])
    edge_stage = Stage(
        edge, names, [HIDDEN, SCORES], list(range(link.spec["block"] + 1)), False,
        {n: {1: "tokens"} for n in token_inputs},
    )  # fmt: skip
    tail_inputs = [TOKENS] + ([MASK] if MASK in split.tail_inputs else [])
    tail_stage = Stage(
        _TailStage(split).eval(), tail_inputs, [LOGITS], [], False,
        {n: {1: "tokens"} for n in tail_inputs},
    )  # fmt: skip
    tail_bounds = {"batch": (1, MAX_BATCH), "tokens": (1, max(int(hidden.shape[1]), 2))}
    echo(f"device half: {names} -> hidden {list(hidden.shape[1:])} and token scores")
    example = tuple(inputs[n] for n in names)
    files = {EDGE_ONNX: write_onnx_stage(edge_stage, export_stage(edge_stage, example, bounds),
                                         out / EDGE_ONNX)}  # fmt: skip
    if target == "all":
        program = export_stage(edge_stage, example, bounds)
        with torch_threads_kept():
            files[EDGE_PTE] = _write_edge_pte(program, out / EDGE_PTE, model_id)
    mask_dtype = str(inputs[MASK].dtype).removeprefix("torch.") if MASK in inputs else "int64"
    tail_example = (hidden[:, :3].contiguous(),) + (
        (torch.ones(hidden.shape[0], 3, dtype=inputs[MASK].dtype),) if MASK in tail_inputs else ()
    )
    echo(f"cloud half: {tail_inputs} -> logits")
    files[TAIL_ONNX] = write_onnx_stage(
        tail_stage, export_stage(tail_stage, tail_example, tail_bounds), out / TAIL_ONNX
    )
    config = link.config
    params = {
        "split_block": link.spec["block"],
        "selector": config.selector,
        "device_sha256": _weights_sha256(split),
    }
    reference = _eager(split, inputs, levels, codecs)
    np.savez(
        out / SPLIT_SAMPLES,
        **{f"input_{n}": inputs[n].numpy() for n in names},
        **{HIDDEN: hidden.numpy(), SCORES: scores.numpy()},
        **reference,
    )
    manifest = {
        "format": SPLIT_FORMAT,
        "schema_version": SPLIT_SCHEMA,
        "model_id": model_id,
        "split": {
            "block": link.spec["block"],
            "block_path": link.spec["block_path"],
            "selector": config.selector,
            "anchor": split.anchor,
            "keeps": levels,
            "codecs": codecs,
            "codec": config.codec if config.codec in codecs else codecs[0],
            "zstd_level": config.zstd_level,
            "width": width,
            "params": params,
        },
        "edge": {
            "inputs": [_spec(n, inputs[n], token_inputs) for n in names],
            "outputs": [
                {"name": HIDDEN, "shape": ["batch", "tokens", width]},
                {"name": SCORES, "shape": ["batch", "tokens"]},
            ],
            "formats": sorted(files.keys() - {TAIL_ONNX}),
            "method": "edge",
        },
        "tail": {
            "file": TAIL_ONNX,
            "inputs": tail_inputs,
            "outputs": [LOGITS],
            "mask_dtype": mask_dtype,
            "max_batch": MAX_BATCH,
        },
        "files": {name: sha256_file(path) for name, path in sorted(files.items())},
    }
    manifest["files"][SPLIT_SAMPLES] = sha256_file(out / SPLIT_SAMPLES)
    if local:
        echo(f"the model without the split, for local answers: {out / LOCAL}")
        export_bundle(
            without_split(model), inputs, out / LOCAL, target=target, model_id=model_id,
            exit_rule=exit_rule, operating_points=operating_points,
            max_tokens=max_tokens if token_inputs else None, echo=lambda line: echo("  " + line),
        )  # fmt: skip
        manifest["local"] = {
            "folder": LOCAL,
            "manifest_sha256": sha256_file(out / LOCAL / "manifest.json"),
        }
    (out / SPLIT_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    echo(f"checking both halves against eager: keep {levels} x codecs {codecs}")
    verify_split(out, echo=lambda line: echo("  " + line))
    if evaluation is not None:
        manifest["offload_points"] = _offload_points(out, *evaluation, levels, codecs, echo)
        manifest["local_accuracy"] = _accuracy(without_split(model), *evaluation)
        (out / SPLIT_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _accuracy(model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> float:
    """Top-1 accuracy of the model without its split (its last exit) on labelled inputs."""
    from ponder._early_exit.infer import final_logits

    right = 0
    with torch.no_grad():
        for i in range(0, len(labels), MAX_BATCH):
            batch = {n: v[i : i + MAX_BATCH] for n, v in inputs.items()}
            logits = final_logits(model(**batch) if list(batch) != ["x"] else model(batch["x"]))
            right += int((logits.argmax(-1) == labels[i : i + MAX_BATCH]).sum())
    return right / len(labels)


def _offload_points(
    out: Path,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    levels: list[float],
    codecs: list[str],
    echo: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Accuracy and mean payload bytes per sample of every keep × codec, through the exported
    halves (ONNX Runtime) and real payloads, in batches of MAX_BATCH rows."""
    runner = SplitBundle.load(out)
    y = np.asarray(labels)
    rows = len(y)
    batches = [
        {n: v[i : i + MAX_BATCH].numpy() for n, v in inputs.items()}
        for i in range(0, rows, MAX_BATCH)
    ]
    points = []
    for keep in levels:
        for codec in codecs:
            right = sent = 0
            for i, batch in enumerate(batches):
                payloads = runner.send(batch, keep, codec)
                sent += sum(len(p) for p in payloads)
                predicted = runner.receive(payloads).argmax(-1)
                right += int((predicted == y[i * MAX_BATCH : i * MAX_BATCH + len(payloads)]).sum())
            points.append({"keep": keep, "codec": codec, "accuracy": right / rows,
                           "payload_bytes": sent / rows, "samples": rows})  # fmt: skip
    table = ", ".join(f"{p['keep']:g}/{p['codec']} {p['accuracy']:.3f} {p['payload_bytes']:.0f} B"
                      for p in points)  # fmt: skip
    echo(f"offload points on {rows} labelled samples (keep/codec accuracy bytes): {table}")
    return points


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).eval()


def _spec(name: str, value: torch.Tensor, token_inputs: list[str]) -> dict[str, Any]:
    shape: list[Any] = ["batch", *value.shape[1:]]
    if name in token_inputs:
        shape[1] = "tokens"
    return {"name": name, "dtype": str(value.dtype).removeprefix("torch."), "shape": shape}


def _write_edge_pte(program: torch.export.ExportedProgram, path: Path, model_id: str) -> Path:
    from ponder.export._formats.pte import executorch_exporter

    executorch_exporter()  # a clear error when executorch is missing
    metadata = {"model_id": model_id, "methods": ["edge"], "format": SPLIT_FORMAT}
    return write_pte([program], path, metadata=metadata, methods=["edge"])


def _weights_sha256(split: SplitModel) -> str:
    """sha256 over the device half's parameters and buffers (name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    state = dict(split.edge.named_parameters())
    state.update(dict(split.edge.named_buffers()))
    for name in sorted(state):
        value = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.float().numpy().tobytes() if value.is_floating_point() else
                      value.numpy().tobytes())  # fmt: skip
    return digest.hexdigest()


@torch.no_grad()
def _eager(
    split: SplitModel, inputs: dict[str, torch.Tensor], levels: list[float], codecs: list[str]
) -> dict[str, np.ndarray]:
    """Logits of the eager split model per keep level and codec, and below keep 1 the kept
    positions [B, K] (-1 on padding slots)."""
    link = split.link
    original = link.config
    found = {}
    try:
        for keep in levels:
            for codec in codecs:
                link.config = dataclasses.replace(original, keep=keep, codec=codec)
                key = sample_key(keep, codec)
                found[f"logits_{key}"] = split(**inputs).numpy()
                if keep < 1:
                    index, kept = split.last_index.numpy(), split.last_kept.numpy()
                    found[f"index_{key}"] = np.where(kept, index, -1)
    finally:
        link.config = original
    return found
