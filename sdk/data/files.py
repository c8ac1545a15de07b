"""A user's own labelled data in the formats people have: JSONL text, an image folder with one
sub-folder per class (torchvision's ImageFolder layout), or `.npz` arrays `x` and `y`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ponder._convert.calls import Inputs, num_samples, take
from ponder._core.errors import ConfigError, MissingDependencyError
from ponder.data.datasets import Split, Splits, _stratified_indices

__all__ = ["load_files", "load_image_folder", "load_jsonl", "load_npz"]

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
MAX_LENGTH = 128  # tokens per text; longer texts are truncated
# a second (calibration) file is split half calibration, half test
_CALIB_FILE_FRACTIONS = (0.0, 0.5, 0.5)


@dataclass(frozen=True)
class _Raw:
    """What one file holds before encoding: inputs (texts, images or an array), one label per
    sample, and where each sample came from (for error messages)."""

    inputs: Any
    labels: list[Any]
    where: list[str]


def load_files(
    train: str | Path,
    calib: str | Path | None = None,
    *,
    preprocessor: Any = None,
    classes: Sequence[str] | None = None,
    max_length: int = MAX_LENGTH,
    seed: int = 0,
) -> Splits:
    """Train / calibration / test splits from a data file, by its kind: `.jsonl`, `.npz` or
    a folder of images.

    One file is split 60/20/20 per class (seeded, as the built-in data sets). With `calib`,
    training uses all of `train` and `calib` is split half calibration, half test; a label in
    `calib` that `train` lacks is an error. Class indices: integer labels are the indices
    themselves; string labels are numbered in sorted order, or in the order of `classes`
    (e.g. a fine-tuned model's id2label) when given.

    `preprocessor` is the model folder's tokenizer (required for text) or image processor
    (optional: without one, images become float tensors [N, 3, H, W] in [0, 1], all one size).
    Text is tokenized to input_ids and attention_mask [N, T], each split padded to its longest
    text (at most `max_length` tokens): one tensor per split, so batches do not re-pad.
    """
    first = _read(Path(train))
    known = _classes(first, classes)
    y = _indices(first, known)
    x = _encode(first, preprocessor, max_length)
    if calib is None:
        parts = [(x, y, idx) for idx in _stratified_indices(y.numpy(), seed)]
        name = Path(train).name
    else:
        second = _read(Path(calib))
        y2, x2 = _indices(second, known), _encode(second, preprocessor, max_length)
        every = torch.arange(len(y))
        calib_idx, test_idx = _stratified_indices(y2.numpy(), seed, _CALIB_FILE_FRACTIONS)[1:]
        parts = [(x, y, every), (x2, y2, calib_idx), (x2, y2, test_idx)]
        name = f"{Path(train).name} + {Path(calib).name}"
    train_s, calib_s, test_s = (_split(xs, ys, torch.as_tensor(i)) for xs, ys, i in parts)
    return Splits(
        train=train_s,
        calib=calib_s,
        test=test_s,
        name=name,
        num_classes=len(known),
        input_shape=_shape(train_s.x),
        classes=tuple(known),
    )


def load_jsonl(path: str | Path, tokenizer: Any, **kwargs: Any) -> Splits:
    """Text from a JSONL file, one `{"text": ..., "label": ...}` object a line (see load_files)."""
    return load_files(path, preprocessor=tokenizer, **kwargs)


def load_image_folder(path: str | Path, processor: Any = None, **kwargs: Any) -> Splits:
    """Images in `path/<class name>/*.png|jpg|...` (read with Pillow; see load_files)."""
    return load_files(path, preprocessor=processor, **kwargs)


def load_npz(path: str | Path, **kwargs: Any) -> Splits:
    """Arrays `x` [N, ...] and `y` [N] (integers or strings) from an `.npz` file (see load_files)."""
    return load_files(path, **kwargs)


# ----------------------------------------------------------------------------- reading


def _read(path: Path) -> _Raw:
    if path.is_dir():
        return _read_images(path)
    if not path.is_file():
        raise ConfigError(f"data file {path} does not exist")
    readers: dict[str, Callable[[Path], _Raw]] = {".jsonl": _read_jsonl, ".npz": _read_npz}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise ConfigError(
            f"cannot read {path}: use a .jsonl file (text and label per line), an .npz file "
            "(arrays x and y) or a folder of images with one sub-folder per class"
        )
    return reader(path)


def _read_jsonl(path: Path) -> _Raw:
    text_key, label_key = "text", "label"
    texts, labels, where = [], [], []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}, line {number}: not valid JSON ({e})") from None
            if not isinstance(row, dict) or text_key not in row or label_key not in row:
                found = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise ConfigError(
                    f"{path}, line {number}: needs the fields {text_key!r} and {label_key!r}, "
                    f"found {found}"
                )
            if not isinstance(row[text_key], str):
                raise ConfigError(f"{path}, line {number}: {text_key!r} must be a string")
            texts.append(row[text_key])
            labels.append(row[label_key])
            where.append(f"{path}, line {number}")
    if not texts:
        raise ConfigError(f"{path} holds no samples")
    return _Raw(texts, labels, where)


def _read_npz(path: Path) -> _Raw:
    with np.load(path, allow_pickle=False) as f:
        if "x" not in f or "y" not in f:
            raise ConfigError(f"{path} needs arrays named 'x' and 'y', found {sorted(f.files)}")
        x, y = f["x"], f["y"]
    if y.ndim != 1 or len(x) != len(y) or not len(y):
        raise ConfigError(
            f"{path}: y must be one label per row of x, got x {x.shape} and y {y.shape}"
        )
    return _Raw(x, y.tolist(), [f"{path}, row {i}" for i in range(len(y))])


def _read_images(path: Path) -> _Raw:
    try:
        from PIL import Image
    except ImportError as e:
        raise MissingDependencyError("pillow", "train", "Reading an image folder") from e
    images, labels, where = [], [], []
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(file) as image:
                    images.append(image.convert("RGB"))
                labels.append(folder.name)
                where.append(str(file))
    if not images:
        raise ConfigError(
            f"{path} holds no images: expected one sub-folder per class holding "
            f"{', '.join(IMAGE_SUFFIXES)} files (torchvision's ImageFolder layout)"
        )
    return _Raw(images, labels, where)


# ----------------------------------------------------------------------------- labels


def _is_index(label: Any) -> bool:
    return isinstance(label, int) and not isinstance(label, bool)


def _classes(raw: _Raw, given: Sequence[str] | None) -> list[str]:
    """Class names by index: `given`, else 0..max for integer labels, else the sorted names."""
    for label, where in zip(raw.labels, raw.where, strict=True):
        if not (_is_index(label) or isinstance(label, str)):
            raise ConfigError(f"{where}: a label must be a string or an integer, got {label!r}")
        if _is_index(label) and label < 0:
            raise ConfigError(f"{where}: integer labels are class indices, got {label}")
    if given is not None:
        return list(given)
    if all(_is_index(label) for label in raw.labels):
        return [str(i) for i in range(max(raw.labels) + 1)]
    if any(_is_index(label) for label in raw.labels):
        raise ConfigError(f"{raw.where[0]}: the labels mix integers and strings; use one kind")
    return sorted(set(raw.labels))


def _indices(raw: _Raw, classes: list[str]) -> torch.Tensor:
    """Each label's class index [N] int64; a label outside `classes` is an error."""
    index = {name: i for i, name in enumerate(classes)}
    out = []
    for label, where in zip(raw.labels, raw.where, strict=True):
        i = label if _is_index(label) and label < len(classes) else index.get(str(label))
        if i is None:
            shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
            raise ConfigError(
                f"{where}: label {label!r} is not a class the model was trained on "
                f"({len(classes)} classes: {shown})"
            )
        out.append(i)
    return torch.tensor(out, dtype=torch.int64)


# ----------------------------------------------------------------------------- encoding


def _encode(raw: _Raw, preprocessor: Any, max_length: int) -> Inputs:
    if isinstance(raw.inputs, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(raw.inputs))
        return x.long() if not torch.is_floating_point(x) else x.float()
    if isinstance(raw.inputs[0], str):
        if preprocessor is None:
            raise ConfigError("text data needs a tokenizer: pass the model folder's tokenizer")
        enc = preprocessor(
            raw.inputs, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        # token_type_ids are dropped: all zeros for single texts (the models' default), and
        # DistilBERT does not take them
        return {k: enc[k].long() for k in ("input_ids", "attention_mask") if k in enc}
    if preprocessor is not None:
        return {
            "pixel_values": preprocessor(images=raw.inputs, return_tensors="pt")["pixel_values"]
        }
    sizes = {image.size for image in raw.inputs}
    if len(sizes) > 1:
        raise ConfigError(
            f"the images have {len(sizes)} different sizes ({sorted(sizes)[:3]}, ...); resize "
            "them to one size or pass the model's image processor"
        )
    pixels = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in raw.inputs])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # [N, H, W, 3] -> [N, 3, H, W]


def _split(x: Inputs, y: torch.Tensor, rows: torch.Tensor) -> Split:
    part = take(x, rows)
    mask = part.get("attention_mask") if isinstance(part, dict) else None
    if mask is not None and num_samples(part):
        # drop the columns that are padding in every row of this split
        length = int(mask.any(0).nonzero().max()) + 1
        part = {k: v[:, :length] for k, v in part.items()}
    return Split(part, y[rows])


def _shape(x: Inputs) -> tuple:
    first = x["pixel_values"] if isinstance(x, dict) and "pixel_values" in x else x
    if isinstance(first, dict):
        first = next(iter(first.values()))
    return tuple(first.shape[1:])
