"""The standard-library docstring task: deterministic, split by module, every class everywhere."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

import ponder
from ponder.data import TextSplits, load_dataset, load_docstrings

PARTS = ("train", "calib", "test")


@pytest.fixture(scope="module")
def task() -> TextSplits:
    return load_docstrings(seed=0)


def test_registered_and_sized(task):
    assert "docstrings" in ponder.data.list_datasets()
    assert load_dataset("docstrings").test.texts == task.test.texts
    assert 10 <= task.num_classes <= 20 and task.classes == tuple(sorted(task.classes))
    total = sum(len(getattr(task, p)) for p in PARTS)
    assert total >= 60 * task.num_classes
    for part in PARTS:
        split = getattr(task, part)
        assert len(split.texts) == len(split.labels) == len(split.modules)
        assert all(isinstance(t, str) and len(t) >= 40 for t in split.texts)


def test_deterministic_and_the_seed_moves_modules(task):
    again = load_docstrings(seed=0)
    assert again == task
    other = load_docstrings(seed=1)
    assert other.classes == task.classes
    assert set(other.test.modules) != set(task.test.modules)


def test_the_same_in_a_fresh_process_whatever_was_imported_before(task):
    # transformers adds methods to logging.Logger; they must not become texts
    pytest.importorskip("transformers")
    import transformers  # noqa: F401

    code = (
        "import hashlib; from ponder.data import load_docstrings; s = load_docstrings(); "
        "print(hashlib.sha256(repr((s.train, s.calib, s.test)).encode()).hexdigest())"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert fresh.returncode == 0, fresh.stderr
    here = load_docstrings(seed=0)
    digest = hashlib.sha256(repr((here.train, here.calib, here.test)).encode()).hexdigest()
    assert fresh.stdout.strip() == digest


def test_no_module_and_no_text_in_two_splits(task):
    modules = [set(getattr(task, p).modules) for p in PARTS]
    texts = [set(getattr(task, p).texts) for p in PARTS]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not modules[i] & modules[j], (PARTS[i], PARTS[j])
            assert not texts[i] & texts[j], (PARTS[i], PARTS[j])


def test_every_class_in_every_split_and_labels_match_modules(task):
    for part in PARTS:
        split = getattr(task, part)
        assert set(split.labels) == set(range(task.num_classes)), part
        for label, module in zip(split.labels, split.modules, strict=True):
            assert module.split(".")[0] == task.classes[label]
    train = len(task.train) / sum(len(getattr(task, p)) for p in PARTS)
    assert 0.5 <= train <= 0.7  # aims at 60/20/20 with whole modules


def test_tokenize_gives_keyword_splits(task):
    class Chars:  # a stand-in tokenizer: one id per character
        def __call__(self, texts, max_length, **_):
            import torch

            ids = [[ord(c) % 100 + 1 for c in t[:max_length]] for t in texts]
            width = max(map(len, ids))
            pad = [row + [0] * (width - len(row)) for row in ids]
            return {
                "input_ids": torch.tensor(pad),
                "attention_mask": (torch.tensor(pad) > 0).long(),
            }

    splits = task.tokenize(Chars(), max_length=16)
    assert splits.num_classes == task.num_classes and splits.classes == task.classes
    assert splits.test.x["input_ids"].shape == (len(task.test), 16)
    assert splits.train.y.tolist() == list(task.train.labels)


def test_too_strict_a_size_rule_says_what_to_do():
    with pytest.raises(ponder.ConfigError, match=r"lower min_samples"):
        load_docstrings(min_samples=100_000)
