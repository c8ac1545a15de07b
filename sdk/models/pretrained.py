"""Hugging Face classifiers from a local `from_pretrained` folder: the model, its tokenizer or
image processor, and the data splits a checkpoint of it recorded (`ponder convert`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ponder._core.errors import CheckpointError, ConfigError
from ponder.data.datasets import Split, Splits
from ponder.data.files import load_files
from ponder.models.text import _transformers

__all__ = [
    "AUTO_CLASSES",
    "POOLINGS",
    "PooledClassifier",
    "as_keywords",
    "default_pooling",
    "fit_head",
    "is_classifier",
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


def is_classifier(model: nn.Module) -> bool:
    """A transformers *ForSequenceClassification / *ForImageClassification (it has its head)."""
    return type(model).__name__.endswith(tuple(s for s in AUTO_CLASSES if s))


POOLINGS = ("mean", "cls", "last")


class PooledClassifier(nn.Module):
    """A base transformer (BertModel, GPT2Model, ViTModel, ...) with a classification head: its
    last hidden states pooled, then one linear layer. pooling: "mean" over the attention mask
    (L2-normalised when `normalize`, as sentence-transformers models are trained), "cls" (the
    first token: BERT's [CLS], ViT's class token), or "last" (each row's last real token, for
    causal models such as GPT-2). `ponder convert` puts one on a base model folder."""

    def __init__(
        self, encoder: nn.Module, num_classes: int, pooling: str = "cls", normalize: bool = False
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling {pooling!r} is not one of {POOLINGS}")
        self.encoder, self.pooling, self.normalize = encoder, pooling, normalize
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)
        self.config = encoder.config  # what exits read (max positions, widths)
        source = getattr(encoder, "_ponder_source", None)
        if source is not None:
            head = {"classes": num_classes, "pooling": pooling, "normalize": normalize}
            self._ponder_source = {**source, "head": head}

    @property
    def main_input_name(self) -> str:
        return self.encoder.main_input_name

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.head(
            self.features(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                pixel_values=pixel_values,
            )
        )

    def features(self, **inputs: torch.Tensor | None) -> torch.Tensor:
        """The pooled hidden state the head reads [B, D], from the inputs `forward` takes."""
        # B=batch, T=tokens, D=width
        given = {k: v for k, v in inputs.items() if v is not None}
        hidden = self.encoder(**given).last_hidden_state  # [B, T, D]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = given.get("attention_mask")
            if mask is None:  # every token is real
                mask = torch.ones(hidden.shape[:2], dtype=torch.int64, device=hidden.device)
            if self.pooling == "mean":
                weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            else:  # the last real token of each (right-padded) row
                last = mask.sum(1).clamp(min=1) - 1  # [B]
                pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return F.normalize(pooled, dim=-1) if self.normalize else pooled  # [B, D]


def default_pooling(folder: str | Path, config: Any) -> tuple[str, bool]:
    """How to pool a base model from `folder`: what its sentence-transformers files say (mean,
    normalised if they normalise), "last" for causal models, else "cls"."""
    import json

    folder = Path(folder)
    modules = folder / "modules.json"
    if modules.is_file():
        kinds = [m.get("type", "") for m in json.loads(modules.read_text())]
        pooling_file = folder / "1_Pooling" / "config.json"
        mean = True
        if pooling_file.is_file():
            mean = bool(json.loads(pooling_file.read_text()).get("pooling_mode_mean_tokens"))
        if mean:
            return "mean", any(k.endswith("Normalize") for k in kinds)
    if getattr(config, "is_decoder", False) or getattr(config, "model_type", "") in _CAUSAL:
        return "last", False
    return "cls", False


_CAUSAL = ("gpt2", "gpt_neo", "gptj", "gpt_neox", "llama", "mistral", "opt", "qwen2", "phi")


def fit_head(
    model: PooledClassifier,
    x: dict[str, torch.Tensor],
    y: torch.Tensor,
    *,
    seed: int = 0,
    steps: int = 300,
    batch_size: int = 64,
    progress: bool = True,
) -> float:
    """Fit the linear head of `model` on its frozen encoder's pooled features of (x, y):
    features computed once, then full-batch AdamW (lr 1e-2, `steps` steps). Returns the
    training accuracy.

    Measured on stdlib docstrings with all-MiniLM-L6-v2 (seed 0, 48 tokens, 1,844 texts): test
    accuracy 64.2% after 300 steps at lr 1e-2 (train 99.4%); 1,000 steps or lr 5e-2 / 2e-1 fit
    train to 100% and reach 61.7-63.9% on test."""
    from ponder._convert.calls import num_samples, take

    rows = num_samples(x)
    batches = range(0, rows, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="pooled features", unit="batch")
    with torch.no_grad():
        features = torch.cat([model.features(**take(x, slice(i, i + batch_size))) for i in batches])
    return fit_linear(model.head, features, y, seed=seed, steps=steps)


def fit_linear(
    head: nn.Linear, features: torch.Tensor, labels: Any, *, seed: int = 0, steps: int = 300
) -> float:
    """Full-batch AdamW (lr 1e-2, weight decay 1e-4) on fixed features [N, D], from a fresh
    initialisation; returns the training accuracy."""
    torch.manual_seed(seed)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    y = torch.as_tensor(labels, dtype=torch.int64)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-4)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(head(features), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float((head(features).argmax(1) == y).float().mean())


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
    model = load_pretrained(folder, source.get("auto"))[0]
    head = source.get("head")
    if head is not None:  # a base model ponder convert put a head on
        model = PooledClassifier(model, head["classes"], head["pooling"], head["normalize"])
    return model


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
