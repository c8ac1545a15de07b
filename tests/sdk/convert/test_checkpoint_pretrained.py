"""Checkpoints of converted Hugging Face classifiers: the source records the folder and Auto
class, and ponder.load rebuilds the same model from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hf_folders import model_folder
from tiny_models import _transformers, hf_inputs

import ponder
from ponder.models.pretrained import auto_class, load_pretrained


@pytest.mark.parametrize(
    ("family", "auto"),
    [
        ("bert", "AutoModelForSequenceClassification"),
        ("vit", "AutoModelForImageClassification"),
    ],
)
def test_save_records_the_folder_and_load_rebuilds_the_same_model(tmp_path, family, auto):
    folder = model_folder(tmp_path, family)
    model, preprocessor = load_pretrained(folder)
    assert preprocessor is not None
    x = hf_inputs(family, padded=family != "vit")
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=2, style="sdn"), example_inputs=x)
    ponder.save(model, tmp_path / "ckpt")
    source = json.loads((tmp_path / "ckpt" / "config.json").read_text())["source"]
    assert source == {"kind": "transformers", "path": str(folder.resolve()), "auto": auto}
    again = ponder.load(tmp_path / "ckpt")
    np.testing.assert_array_equal(
        ponder.exit_outputs(again, x).logp, ponder.exit_outputs(model.eval(), x).logp
    )


def test_the_auto_class_follows_the_folders_architecture():
    tf = _transformers()
    config = tf.BertConfig()
    for archs, auto in [
        (["BertForSequenceClassification"], "AutoModelForSequenceClassification"),
        (["ViTForImageClassification"], "AutoModelForImageClassification"),
        (["BertModel"], "AutoModel"),
        (None, "AutoModel"),
    ]:
        config.architectures = archs
        assert auto_class(config) == auto


def test_a_gpt2_tokenizer_without_a_pad_token_pads_with_its_end_token(tmp_path):
    tf = _transformers()
    folder = model_folder(tmp_path, "gpt2")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "pad_token_id": None}))
    tok = tf.AutoTokenizer.from_pretrained(folder)
    tok.pad_token = None
    tok.eos_token = "[SEP]"
    tok.save_pretrained(folder)
    model, tokenizer = load_pretrained(folder)
    assert tokenizer.pad_token == "[SEP]"
    assert model.config.pad_token_id == tokenizer.convert_tokens_to_ids("[SEP]")
