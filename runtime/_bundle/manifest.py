"""Typed, immutable views of a bundle manifest; `Manifest.from_dict` validates, `to_dict` inverts."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ponder import __version__
from ponder.runtime._bundle.validate import FORMAT, SCHEMA_VERSION, validate_manifest


def utc_now() -> str:
    """The current time as the manifest writes it: '2026-11-22T20:00:00Z'."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: a dim is a size (int) or a symbolic name such as 'batch'."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(name=d["name"], dtype=d["dtype"], shape=tuple(d["shape"]))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class StageSpec:
    """One stage: the blocks it runs, its program method and ONNX file, and its cost per sample."""

    index: int
    method: str
    onnx: str | None  # None: the bundle was exported without ONNX
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    blocks: tuple[int, ...]
    flops: int
    cumulative_flops: int
    params: int
    exit: bool

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageSpec:
        return cls(
            index=d["index"],
            method=d["method"],
            onnx=d["onnx"],
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            blocks=tuple(d["blocks"]),
            flops=d["flops"],
            cumulative_flops=d["cumulative_flops"],
            params=d["params"],
            exit=d["exit"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "method": self.method,
            "onnx": self.onnx,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "blocks": list(self.blocks),
            "flops": self.flops,
            "cumulative_flops": self.cumulative_flops,
            "params": self.params,
            "exit": self.exit,
        }


@dataclass(frozen=True)
class ExitRuleSpec:
    """The exit rule the bundle runs by default: a registered rule name and one threshold per
    early exit (None: the runtime must be given thresholds, e.g. from an operating point)."""

    name: str
    ensembled: bool = False
    thresholds: tuple[float, ...] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExitRuleSpec:
        t = d["thresholds"]
        return cls(d["name"], d["ensembled"], None if t is None else tuple(t))

    def to_dict(self) -> dict[str, Any]:
        t = None if self.thresholds is None else list(self.thresholds)
        return {"name": self.name, "ensembled": self.ensembled, "thresholds": t}


@dataclass(frozen=True)
class FileEntry:
    """What the manifest promises about one file: its sha256 and size in bytes."""

    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class Manifest:
    """A bundle manifest (format major version 1). Free-form parts (`config`, `moe`,
    `quantization`, operating points) stay plain dicts; keys a newer minor version adds are not
    kept (the `Bundle` keeps the dict as read)."""

    model_id: str
    task: str
    classes: int | None
    inputs: tuple[TensorSpec, ...]
    stages: tuple[StageSpec, ...]
    exit_rule: ExitRuleSpec
    operating_points: tuple[dict[str, Any], ...] = ()
    moe: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    manifest_sha256: str | None = None
    schema_version: str = SCHEMA_VERSION
    ponder_version: str = __version__
    created_utc: str = field(default_factory=utc_now)
    format: str = FORMAT

    @property
    def num_exits(self) -> int:
        """Number of early exits (every stage but the last)."""
        return sum(1 for s in self.stages if s.exit)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Validate `d` (BundleError if invalid; the digest is not checked) and wrap it."""
        validate_manifest(d)
        d = copy.deepcopy(d)
        return cls(
            model_id=d["model_id"],
            task=d["task"],
            classes=d["classes"],
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            stages=tuple(StageSpec.from_dict(s) for s in d["stages"]),
            exit_rule=ExitRuleSpec.from_dict(d["exit_rule"]),
            operating_points=tuple(d["operating_points"]),
            moe=d["moe"],
            quantization=d["quantization"],
            config=d["config"],
            files={k: FileEntry(v["sha256"], v["bytes"]) for k, v in d["files"].items()},
            manifest_sha256=d["manifest_sha256"],
            schema_version=d["schema_version"],
            ponder_version=d["ponder_version"],
            created_utc=d["created_utc"],
            format=d["format"],
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready dict, keys in the documented order; `manifest_sha256` is
        left out while it is None (`write_manifest` fills it and `files`)."""
        d: dict[str, Any] = {
            "format": self.format,
            "schema_version": self.schema_version,
            "ponder_version": self.ponder_version,
            "model_id": self.model_id,
            "created_utc": self.created_utc,
            "task": self.task,
            "classes": self.classes,
            "inputs": [t.to_dict() for t in self.inputs],
            "stages": [s.to_dict() for s in self.stages],
            "exit_rule": self.exit_rule.to_dict(),
            "operating_points": copy.deepcopy(list(self.operating_points)),
            "moe": copy.deepcopy(self.moe),
            "quantization": copy.deepcopy(self.quantization),
            "config": copy.deepcopy(self.config),
            "files": {k: v.to_dict() for k, v in self.files.items()},
        }
        if self.manifest_sha256 is not None:
            d["manifest_sha256"] = self.manifest_sha256
        return d
