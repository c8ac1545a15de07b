"""Local Hugging Face `from_pretrained` folders for the command-line path: a tiny classifier of
tests/tiny_models.py saved beside a word-level tokenizer (or image processor), and small
labelled data files in the formats `ponder convert` reads."""

from __future__ import annotations

import json
from pathlib import Path

from tiny_models import CLASSES, HF_IMAGE, hf_classifier

# the tokenizer's vocabulary: special tokens first ([PAD] = 0, as the tiny models' pad id)
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["red", "green", "blue", "cyan", "pink", "very", "quite", "a", "the", "colour", "is"]
LABELS = ["red", "green", "blue", "cyan", "pink"]  # one class per colour word
assert len(LABELS) == CLASSES


def tokenizer(folder: Path):
    """A BERT WordPiece tokenizer over WORDS, saved in `folder` and returned."""
    from tiny_models import _transformers

    tf = _transformers()
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + WORDS) + "\n")
    tok = tf.BertTokenizer(str(vocab), model_max_length=16)
    tok.save_pretrained(folder)
    return tok


def model_folder(root: Path, family: str = "bert") -> Path:
    """`hf_classifier(family)` saved with save_pretrained, plus its tokenizer (text) or a
    ViT image processor (images): what a user downloads from the hub."""
    from tiny_models import _transformers

    folder = root / f"hf-{family}"
    hf_classifier(family).save_pretrained(folder)
    if family == "vit":
        processor = _transformers().ViTImageProcessor(size={"height": HF_IMAGE, "width": HF_IMAGE})
        processor.save_pretrained(folder)
    else:
        tokenizer(folder)
    return folder


def texts(n: int, seed: int = 0) -> list[dict]:
    """`n` JSONL rows whose label is the colour word in the text (so exits can learn it)."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = LABELS[i % CLASSES]
        words = [rng.choice(["a", "the"]), "colour", "is", rng.choice(["very", "quite"])]
        rows.append({"text": " ".join([*words[: 1 + i % 4], label]), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
