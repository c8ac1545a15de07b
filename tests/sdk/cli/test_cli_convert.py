"""`ponder convert`: a Hugging Face classifier folder and labelled files to a trained early-exit
checkpoint that `ponder evaluate` and `ponder.load` read back; one-line errors for the user's
mistakes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hf_folders import model_folder, texts, write_jsonl
from tiny_models import _transformers

import ponder
from ponder._calibration.checkpoint import evaluate_checkpoint
from ponder._cli import main
from ponder._cli.pretrained import convert_pretrained

QUICK = ["--epochs", "2", "--batch-size", "8", "--quiet"]


def _quiet(_: str) -> None:
    pass


def _convert(folder, data, out, **kwargs):
    options = {"exits": 2, "epochs": 2, "batch_size": 8, "progress": False, "echo": _quiet}
    return convert_pretrained(folder, data, out, **{**options, **kwargs})


def test_convert_then_evaluate_on_the_command_line(tmp_path):
    folder = model_folder(tmp_path, "bert")
    data = write_jsonl(tmp_path / "d.jsonl", texts(25))
    out = tmp_path / "ckpt"
    args = ["convert", str(folder), "--train", str(data), "--exits", "2", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, *QUICK])
    assert result.exit_code == 0, result.output
    assert "exits after blocks [0, 2] of 4 (ztw)" in result.output
    assert "each exit on the test split" in result.output
    meta = json.loads((out / "config.json").read_text())
    assert meta["source"] == {
        "kind": "transformers",
        "path": str(folder.resolve()),
        "auto": "AutoModelForSequenceClassification",
    }
    files = meta["extra"]["data_files"]
    assert files["train"] == str(data.resolve()) and files["calib"] is None
    assert files["classes"] == ["blue", "cyan", "green", "pink", "red"]
    evaluated = CliRunner().invoke(main, ["evaluate", str(out)])
    assert evaluated.exit_code == 0, evaluated.output
    assert "3 exits, evaluated on d.jsonl (5 calibration / 5 test samples)" in evaluated.output


@pytest.mark.parametrize("family", ["distilbert", "gpt2"])
def test_evaluate_reads_back_what_convert_measured(tmp_path, family):
    folder = model_folder(tmp_path, family)
    train = write_jsonl(tmp_path / "train.jsonl", texts(15))
    calib = write_jsonl(tmp_path / "calib.jsonl", texts(10, seed=1))
    made = _convert(folder, train, tmp_path / "ckpt", calib=calib, style="sdn", joint=True)
    again = evaluate_checkpoint(tmp_path / "ckpt", echo=_quiet)
    # the same rows, padded alike, through the same weights
    np.testing.assert_allclose(again["test_data"].logp, made["test_data"].logp, atol=1e-5)
    assert again["test"]["samples"] == 5
    model = ponder.load(tmp_path / "ckpt")
    assert type(model).__name__.endswith("ForSequenceClassification")
    assert model.ponder_exits.config.style == "sdn"


def _images(root, n=4):
    from PIL import Image

    for c, name in enumerate(("a", "b", "c", "d", "e")):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = np.full((10, 12, 3), 30 * c + 5 * i, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_vit_on_an_image_folder_with_chosen_exit_blocks(tmp_path):
    pytest.importorskip("PIL")
    folder = model_folder(tmp_path, "vit")
    made = _convert(
        folder, _images(tmp_path / "images"), tmp_path / "ckpt", exits=None, exit_blocks=(1,)
    )
    assert len(made["test"]["exit_accuracy"]) == 2
    model = ponder.load(tmp_path / "ckpt")
    assert model.ponder_exits.spec["exit_blocks"] == [1]
    again = evaluate_checkpoint(tmp_path / "ckpt", echo=_quiet)
    np.testing.assert_allclose(again["test_data"].logp, made["test_data"].logp, atol=1e-5)


def test_a_moved_model_folder_is_a_clear_checkpoint_error(tmp_path):
    folder = model_folder(tmp_path, "bert")
    _convert(folder, write_jsonl(tmp_path / "d.jsonl", texts(25)), tmp_path / "ckpt")
    shutil.move(folder, tmp_path / "elsewhere")
    with pytest.raises(ponder.CheckpointError, match=r"which is not there any more"):
        ponder.load(tmp_path / "ckpt")
    # handed the model, load still works
    tf = _transformers()
    model = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "elsewhere")
    loaded = ponder.load(tmp_path / "ckpt", model=model)
    assert loaded.ponder_exits.num_exits == 3


def _invoke(*args: str):
    return CliRunner().invoke(main, ["convert", *args, *QUICK])


def _error_line(result) -> str:
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.output.strip().splitlines()[-1]


def test_errors_are_one_line(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", texts(25))
    (tmp_path / "empty").mkdir()
    line = _error_line(_invoke(str(tmp_path / "empty"), "--train", str(data), "--out", "o"))
    assert line.startswith("Error:") and "not a transformers model folder" in line

    folder = model_folder(tmp_path, "bert")
    no_label = tmp_path / "bad.jsonl"
    no_label.write_text('{"text": "red", "label": "red"}\n{"text": "blue"}\n')
    line = _error_line(_invoke(str(folder), "--train", str(no_label), "--out", "o"))
    assert "bad.jsonl, line 2: needs the fields 'text' and 'label'" in line

    calib = write_jsonl(tmp_path / "calib.jsonl", [{"text": "a colour", "label": "black"}])
    args = [str(folder), "--train", str(data), "--calib-data", str(calib), "--out", "o"]
    line = _error_line(_invoke(*args))
    assert "calib.jsonl, line 1: label 'black' is not a class the model was trained on" in line

    line = _error_line(_invoke(*args[:3], "--exits", "2", "--exit-blocks", "1", "--out", "o"))
    assert "give --exits or --exit-blocks, not both" in line


def test_models_ponder_cannot_use_are_named(tmp_path):
    tf = _transformers()
    data = write_jsonl(tmp_path / "d.jsonl", texts(25))
    config = tf.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=5,
    )
    torch.manual_seed(0)
    one_layer = model_folder(tmp_path, "bert")  # for its tokenizer
    tf.BertForSequenceClassification(config).save_pretrained(one_layer)
    line = _error_line(_invoke(str(one_layer), "--train", str(data), "--out", "o"))
    assert "cannot find the blocks of BertForSequenceClassification" in line


def _base_folder(tmp_path, sentence_transformers: bool = False):
    """The tiny BERT classifier's base model (no head) saved with its tokenizer; optionally
    with the files sentence-transformers writes for mean pooling and normalisation."""
    folder = model_folder(tmp_path / "src", "bert")
    base = tmp_path / "base"
    _transformers().BertModel.from_pretrained(folder).save_pretrained(base)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).is_file():
            shutil.copy(folder / name, base / name)
    if sentence_transformers:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            },
        ]
        (base / "modules.json").write_text(json.dumps(modules))
        (base / "1_Pooling").mkdir()
        (base / "1_Pooling" / "config.json").write_text(
            json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})
        )
    return base


@pytest.mark.parametrize(("st", "pooling"), [(False, "cls"), (True, "mean")])
def test_a_base_model_gets_a_pooled_head_and_exports(tmp_path, st, pooling):
    pytest.importorskip("onnxruntime")
    from ponder.export import export_checkpoint
    from ponder.runtime import Engine

    base = _base_folder(tmp_path, sentence_transformers=st)
    data = write_jsonl(tmp_path / "d.jsonl", texts(40))
    out = tmp_path / "ckpt"
    lines = []
    _convert(base, data, out, echo=lines.append)
    assert any(f"BertModel has no classification head: added {pooling} pooling" in x for x in lines)
    meta = json.loads((out / "config.json").read_text())
    assert meta["source"]["head"] == {"classes": 5, "pooling": pooling, "normalize": st}
    model = ponder.load(out)  # rebuilt from the folder, head and all
    assert type(model).__name__ == "PooledClassifier" and model.pooling == pooling
    export_checkpoint(out, tmp_path / "bundle", target="onnx", echo=_quiet)
    engine = Engine.load(tmp_path / "bundle", "onnxruntime")
    tokenizer = _transformers().AutoTokenizer.from_pretrained(base)
    batch = tokenizer([r["text"] for r in texts(12, seed=5)], padding=True, return_tensors="np")
    x = {spec.name: batch[spec.name] for spec in engine.bundle.manifest.inputs}
    got = engine.run(x)
    threshold = engine.default_point.thresholds[0]
    eager = ponder.infer(
        model, {k: torch.from_numpy(v) for k, v in x.items()}, thresholds=threshold
    )
    np.testing.assert_array_equal(got.prediction, eager.prediction.numpy())
    np.testing.assert_array_equal(got.exit_stage, eager.exit_index.numpy())


def test_evaluate_takes_another_data_file_in_place_of_the_recorded_one(tmp_path):
    folder = model_folder(tmp_path, "bert")
    _convert(folder, write_jsonl(tmp_path / "d.jsonl", texts(25)), tmp_path / "ckpt")
    other = write_jsonl(tmp_path / "other.jsonl", texts(50, seed=3))
    result = evaluate_checkpoint(tmp_path / "ckpt", data=str(other), echo=_quiet)
    assert result["test"]["samples"] == 10
