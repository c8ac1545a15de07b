"""A user's own data files: JSONL text, image folders and .npz arrays, split like the built-in
data sets, with errors that name the file and line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hf_folders import LABELS, texts, tokenizer, write_jsonl

from ponder import ConfigError
from ponder.data import Splits, load_files, load_image_folder, load_jsonl, load_npz


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tokenizer(tmp_path_factory.mktemp("tokenizer"))


def _sizes(s: Splits) -> tuple[int, int, int]:
    return len(s.train), len(s.calib), len(s.test)


def test_jsonl_is_tokenized_and_split_per_class(tmp_path, tok):
    path = write_jsonl(tmp_path / "d.jsonl", texts(50))
    s = load_jsonl(path, tok)
    assert _sizes(s) == (30, 10, 10) and s.num_classes == 5
    assert s.classes == tuple(sorted(LABELS))  # string labels: sorted names
    for split in (s.train, s.calib, s.test):
        assert set(split.x) == {"input_ids", "attention_mask"}
        assert split.x["input_ids"].shape == split.x["attention_mask"].shape
        assert split.x["input_ids"].shape[0] == len(split.y)
        assert split.x["attention_mask"][:, -1].any()  # no all-padding column kept
        assert torch.bincount(split.y, minlength=5).tolist() == [len(split) // 5] * 5
    # the label word is the last real token of each text
    ids, mask = s.test.x["input_ids"], s.test.x["attention_mask"]
    last = ids[torch.arange(len(ids)), mask.sum(1) - 2]  # before [SEP]
    words = tok.convert_ids_to_tokens(last.tolist())
    assert [s.classes[i] for i in s.test.y] == words
    again = load_files(path, preprocessor=tok)
    assert torch.equal(again.test.y, s.test.y)
    assert not torch.equal(load_files(path, preprocessor=tok, seed=1).test.y, s.test.y)


def test_integer_labels_are_the_class_indices(tmp_path, tok):
    rows = [{"text": r["text"], "label": LABELS.index(r["label"])} for r in texts(25)]
    s = load_files(write_jsonl(tmp_path / "d.jsonl", rows), preprocessor=tok)
    assert s.classes == ("0", "1", "2", "3", "4")
    assert sorted(torch.cat([s.train.y, s.calib.y, s.test.y]).tolist()) == sorted(
        r["label"] for r in rows
    )


def test_given_classes_fix_the_order(tmp_path, tok):
    s = load_files(write_jsonl(tmp_path / "d.jsonl", texts(25)), preprocessor=tok, classes=LABELS)
    assert s.classes == tuple(LABELS)


def test_a_calibration_file_is_split_into_calibration_and_test(tmp_path, tok):
    train = write_jsonl(tmp_path / "train.jsonl", texts(20))
    calib = write_jsonl(tmp_path / "calib.jsonl", texts(20, seed=1))
    s = load_files(train, calib, preprocessor=tok)
    assert _sizes(s) == (20, 10, 10)
    assert s.name == "train.jsonl + calib.jsonl"


def test_a_calibration_label_training_never_saw_is_an_error(tmp_path, tok):
    train = write_jsonl(tmp_path / "train.jsonl", texts(20))
    rows = [*texts(4), {"text": "a colour", "label": "black"}]
    calib = write_jsonl(tmp_path / "calib.jsonl", rows)
    with pytest.raises(ConfigError, match=r"calib\.jsonl, line 5: label 'black' is not a class"):
        load_files(train, calib, preprocessor=tok)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"text": "red"}, r"line 3: needs the fields 'text' and 'label', found \['text'\]"),
        ("{not json", r"line 3: not valid JSON"),
        ({"text": "red", "label": 1.5}, r"line 3: a label must be a string or an integer"),
        ({"text": 7, "label": "red"}, r"line 3: 'text' must be a string"),
    ],
)
def test_bad_lines_are_reported_with_file_and_line(tmp_path, tok, line, message):
    good = json.dumps({"text": "red", "label": "red"})
    bad = line if isinstance(line, str) else json.dumps(line)
    path = tmp_path / "d.jsonl"
    path.write_text(f"{good}\n\n{bad}\n")
    with pytest.raises(ConfigError, match=message):
        load_files(path, preprocessor=tok)


def test_text_needs_a_tokenizer_and_files_a_known_kind(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", texts(5))
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        load_files(path)
    (tmp_path / "d.csv").write_text("text,label\n")
    with pytest.raises(ConfigError, match=r"use a \.jsonl file"):
        load_files(tmp_path / "d.csv")
    with pytest.raises(ConfigError, match="does not exist"):
        load_files(tmp_path / "missing.jsonl")


def test_npz_arrays(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 1, 8)).astype(np.float64)
    y = np.array(["b", "a", "c"] * 10)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    s = load_npz(tmp_path / "d.npz")
    assert _sizes(s) == (18, 6, 6) and s.classes == ("a", "b", "c")
    assert s.train.x.dtype == torch.float32 and s.input_shape == (1, 8)
    np.savez(tmp_path / "bad.npz", x=x, labels=y)
    with pytest.raises(
        ConfigError, match=r"needs arrays named 'x' and 'y', found \['labels', 'x'\]"
    ):
        load_npz(tmp_path / "bad.npz")


def _image_folder(root, sizes=((6, 5),)):
    from PIL import Image

    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(5):
            size = sizes[i % len(sizes)]
            pixels = np.full((size[1], size[0], 3), 40 * c + i, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_without_a_processor_gives_float_images(tmp_path):
    pytest.importorskip("PIL")
    s = load_image_folder(_image_folder(tmp_path / "images"))
    assert _sizes(s) == (6, 2, 2) and s.classes == ("cat", "dog")
    assert s.train.x.shape == (6, 3, 5, 6) and s.train.x.dtype == torch.float32
    assert float(s.train.x.max()) <= 1.0
    dog = s.train.x[s.train.y == 1]
    assert float(dog.min()) >= 40 / 255 - 1e-6  # dog pixels are 40..44


def test_image_folder_with_a_processor_gives_pixel_values(tmp_path):
    pytest.importorskip("PIL")
    from tiny_models import _transformers

    processor = _transformers().ViTImageProcessor(size={"height": 16, "width": 16})
    root = _image_folder(tmp_path / "images", sizes=((6, 5), (9, 7)))
    s = load_image_folder(root, processor)
    assert s.train.x["pixel_values"].shape == (6, 3, 16, 16)
    with pytest.raises(ConfigError, match="2 different sizes"):
        load_image_folder(root)
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(ConfigError, match="holds no images"):
        load_image_folder(tmp_path / "empty")
