"""Hugging Face classifiers from a local `from_pretrained` folder: the model, its tokenizer or
image processor, and the data splits a checkpoint of it recorded (`ponder convert`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ponder._core.errors import CheckpointError, ConfigError, UnsupportedModelError
from ponder.data.datasets import Split, Splits
from ponder.data.files import load_files
from ponder.models.text import _transformers

__all__ = [
    "AUTO_CLASSES",
    "as_keywords",
    "check_classifier",
    "load_preprocessor",
    "load_pretrained",
    "rebuild",
    "recorded_splits",
]

# the transformers Auto classes a checkpoint can name, by the suffix of the folder's architecture
AUTO_CLASSES = {
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForImageClassification": "AutoModelForImageClassification",
    "": "AutoModel",
}


def load_pretrained(folder: str | Path, auto: str | None = None) -> tuple[nn.Module, Any]:
    """The model in `folder` (eval mode) and its tokenizer or image processor (None if the
    folder has neither). `auto` names the Auto class; by default it follows the folder's
    `architectures`. The model remembers where it came from, so `ponder.load` can rebuild a
    checkpoint of it."""
    folder = Path(folder)
    tf = _transformers()
    config = _config(tf, folder)
    auto = auto or auto_class(config)
    if auto not in AUTO_CLASSES.values():
        raise ConfigError(f"unknown Auto class {auto!r}; known: {sorted(AUTO_CLASSES.values())}")
    try:
        model = getattr(tf, auto).from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{folder}: transformers could not load its {auto}: {e}") from e
    preprocessor = load_preprocessor(folder, model.main_input_name)
    pad = getattr(preprocessor, "pad_token_id", None)
    if getattr(model.config, "pad_token_id", 0) is None and pad is not None:
        model.config.pad_token_id = pad  # GPT-2 heads find each row's last token by it
    model._ponder_source = {"kind": "transformers", "path": str(folder.resolve()), "auto": auto}
    return model.eval(), preprocessor


def auto_class(config: Any) -> str:
    """The Auto class that builds what the folder's config.json names as its architecture."""
    for arch in getattr(config, "architectures", None) or []:
        for suffix, auto in AUTO_CLASSES.items():
            if suffix and arch.endswith(suffix):
                return auto
    return "AutoModel"


def load_preprocessor(folder: str | Path, main_input: str = "input_ids") -> Any:
    """The folder's tokenizer (text models) or image processor (`pixel_values` models; None
    when the folder has none). A tokenizer without a padding token pads with its end token."""
    tf = _transformers()
    if main_input == "pixel_values":
        if not (Path(folder) / "preprocessor_config.json").is_file():
            return None
        return tf.AutoImageProcessor.from_pretrained(str(folder))
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(
            f"{folder} has no usable tokenizer ({e}); save it beside the model with "
            "tokenizer.save_pretrained(folder)"
        ) from e
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has none
    return tokenizer


def _config(tf: Any, folder: Path) -> Any:
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"{folder} is not a transformers model folder: it has no config.json. Pass a "
            "folder written by model.save_pretrained(folder) (or downloaded from the hub)"
        )
    try:
        return tf.AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{folder}/config.json is not a transformers config: {e}") from e


def check_classifier(model: nn.Module, folder: str | Path) -> None:
    """Refuse a model without a classification head (ponder trains exits against its labels)."""
    if type(model).__name__.endswith(tuple(s for s in AUTO_CLASSES if s)):
        return
    raise UnsupportedModelError(
        f"{folder} holds a {type(model).__name__}, which has no classification head; "
        "`ponder convert` needs a fine-tuned classifier (*ForSequenceClassification or "
        "*ForImageClassification). Fine-tune one first, or convert in Python with "
        "ponder.convert_ and your own head"
    )


def rebuild(source: dict[str, Any], checkpoint: str | Path) -> nn.Module:
    """The model a checkpoint's `source` recorded, loaded again from its folder."""
    folder = source.get("path")
    if folder is None or not Path(folder).is_dir():
        raise CheckpointError(
            f"{checkpoint} was converted from the transformers model in {folder}, which is not "
            "there any more. Put the folder back, or load the model yourself and pass it: "
            f"ponder.load({str(checkpoint)!r}, model={source.get('auto', 'AutoModel')}"
            ".from_pretrained(new_folder))"
        )
    return load_pretrained(folder, source.get("auto"))[0]


def as_keywords(splits: Splits, name: str) -> Splits:
    """Splits whose inputs are keyword dicts: a plain tensor `x` becomes `{name: x}` (e.g. an
    .npz of images for a model that takes `pixel_values`)."""
    if not isinstance(splits.train.x, torch.Tensor):
        return splits
    parts = {p: Split({name: getattr(splits, p).x}, getattr(splits, p).y) for p in _PARTS}
    return dataclasses.replace(splits, **parts)


_PARTS = ("train", "calib", "test")


def recorded_splits(meta: dict[str, Any], data: str | Path | None = None) -> Splits | None:
    """The Splits of the data files a checkpoint's `extra["data_files"]` recorded (or of the
    file `data` in their place, split 60/20/20), encoded with its model folder's preprocessor;
    None when it recorded none."""
    spec = (meta.get("extra") or {}).get("data_files")
    if not spec:
        return None
    if data is not None:
        spec = {**spec, "train": str(data), "calib": None}
    source = meta.get("source") or {}
    folder = source.get("path")
    if folder is None or not Path(folder).is_dir():
        raise CheckpointError(
            f"the model folder {folder} recorded in the checkpoint is not there any more; "
            "its tokenizer or image processor encodes the data. Put the folder back"
        )
    main_input = spec.get("main_input", "input_ids")
    splits = load_files(
        spec["train"],
        spec.get("calib"),
        preprocessor=load_preprocessor(folder, main_input),
        classes=spec.get("classes"),
        max_length=spec.get("max_length", 128),
        seed=spec.get("seed", 0),
    )
    return as_keywords(splits, main_input)
