"""Checkpoints: a folder with safetensors weights and a JSON config that rebuilds the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

import ponder
from ponder._convert.convert import conversions, convert_, log_conversion
from ponder._core.config import Config, config_from_dict
from ponder._core.errors import CheckpointError, MissingDependencyError, PonderError

FORMAT, FORMAT_VERSION = "ponder-checkpoint", 1
WEIGHTS, CONFIG = "weights.safetensors", "config.json"
SOURCE_ATTR = "_ponder_source"  # set on models ponder can rebuild by itself


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError:
        raise MissingDependencyError("safetensors", "train", "Saving checkpoints") from None
    return st


def save(model: nn.Module, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write `model` (with its conversions) to folder `path`; `extra` is stored as given (JSON)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ponder_version": ponder.__version__,
        "source": getattr(model, SOURCE_ATTR, {"kind": "user", "class": type(model).__name__}),
        "conversions": [_entry(model, config) for config in conversions(model)],
        "extra": extra or {},
    }
    _safetensors().save_model(model, str(path / WEIGHTS))
    (path / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    """The checkpoint's JSON config, checked for format and version."""
    file = Path(path) / CONFIG
    if not file.is_file():
        raise CheckpointError(
            f"{path} is not a ponder checkpoint: {file.name} is missing. "
            "Write one with ponder.save(model, folder) or `ponder demo`."
        )
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{file} is not valid JSON ({exc}); the checkpoint is corrupt"
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{file} is not a ponder checkpoint config (format={meta.get('format')!r})"
        )
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format {meta['format_version']}, newer than this ponder "
            f"({FORMAT_VERSION}); upgrade ponder to read it"
        )
    return meta


def load(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Rebuild a saved model: the base model (built in, or `model` for user models), its
    conversions re-applied, then the saved weights. Returned in eval mode."""
    path = Path(path)
    meta = read_config(path)
    if not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS}; the checkpoint is incomplete")
    if model is None:
        model = _build(meta["source"], path)
    try:
        for entry in meta["conversions"]:
            _replay(model, entry)
        missing, unexpected = _safetensors().load_model(model, str(path / WEIGHTS), strict=False)
    except (PonderError, RuntimeError) as exc:
        raise CheckpointError(_MISFIT.format(path=path, detail=exc)) from exc
    if missing or unexpected:
        detail = f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        raise CheckpointError(_MISFIT.format(path=path, detail=detail))
    return model.eval()


_MISFIT = (
    "the checkpoint in {path} does not fit the model it is loaded into ({detail}); "
    "was it saved from a different architecture? Pass the same unconverted model it was "
    "saved from: ponder.load(path, model=...)"
)


def _entry(model: nn.Module, config: Config) -> dict[str, Any]:
    entry: dict[str, Any] = {"config": config.to_dict()}
    if config.kind == "early_exit":  # resolved widths and blocks, so load needs no dry run
        from ponder._early_exit.stack import get_stack

        entry["spec"] = get_stack(model).spec
    return entry


def _replay(model: nn.Module, entry: dict[str, Any]) -> None:
    """Apply one recorded conversion again; the saved weights then overwrite what it built
    (an MoE split of the fresh weights only fixes the shapes)."""
    from ponder._convert.convert import _load_builtin

    _load_builtin()  # the built-in config types register themselves when imported
    config = config_from_dict(entry["config"])
    if config.kind == "early_exit":
        from ponder._early_exit.config import attach_exits

        attach_exits(model, config, entry["spec"])
        log_conversion(model, config)
    else:
        convert_(model, config)


def _build(source: dict[str, Any], path: Path) -> nn.Module:
    if source.get("kind") == "builtin":
        from ponder.models import create_model

        return create_model(source["name"], **source.get("kwargs", {}))
    if source.get("kind") == "transformers" and "auto" in source:  # ponder convert's
        from ponder.models.pretrained import rebuild

        return rebuild(source, path)
    if source.get("kind") == "transformers":
        from ponder.models.text import load_source_encoder

        return load_source_encoder(source)[0]
    raise CheckpointError(
        f"{path} holds a user model ({source.get('class')}) that ponder cannot build by itself; "
        "pass the unconverted model: ponder.load(path, model=MyModel(...))"
    )
