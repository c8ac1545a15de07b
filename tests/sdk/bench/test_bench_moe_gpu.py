"""`ponder bench moe --device cuda` and the GPU script behind it (sdk/_bench/moe_gpu.py): here,
without a GPU, the command says so, and the script's smoke run measures the Triton kernel in
Triton's interpreter from a bare checkout (no install), as it runs on a lent GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ponder._cli import main

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bench_moe_on_cuda_says_there_is_no_gpu(tmp_path):
    got = CliRunner().invoke(main, ["bench", "moe", "--device", "cuda", "--out", str(tmp_path)])
    assert got.exit_code == 1
    assert "no CUDA device here: torch.cuda.is_available() is False" in got.output


@pytest.mark.slow
def test_gpu_script_smoke_run_from_a_bare_checkout(tmp_path):
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": ""}
    script = ROOT / "sdk" / "_bench" / "moe_gpu.py"
    args = ["--out", str(tmp_path), "--smoke", "--no-tests", "--no-sweep", "--rounds", "2"]
    got = subprocess.run(
        [sys.executable, str(script), *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert got.returncode == 0, got.stdout + got.stderr
    result = json.loads((tmp_path / "moe_gpu.json").read_text())
    cells = result["cells"]
    # every FFN x dtype x token count x fraction of the smoke grid, with the kernel timed
    assert len(cells) == 2 * 2 * 4
    for cell in cells:
        assert {"dense", "reference", "triton", "triton_atomic"} <= set(cell["ms"])
        assert cell["flops_fraction"] == cell["experts_per_token"] / cell["E"]
        tolerance = 1e-5 if cell["dtype"] == "fp32" else 4e-3  # as the kernel tests
        assert cell["triton_max_err"] <= tolerance and cell["triton_atomic_max_err"] <= tolerance
    # the whole tiny encoder, dense against D2DMoE on the kernel, at each FFN fraction
    ends = result["end_to_end"]
    assert [row["experts_per_token"] for row in ends] == [1, 1, 2]  # 10%, 25%, 50% of 4
    for row in ends:
        assert row["ms"]["dense"]["median"] > 0 and row["ms"]["moe"]["median"] > 0
        assert 0 < row["flops_fraction"] < 1
    table = (tmp_path / "moe_gpu.md").read_text()
    assert "| FFN | dtype | T |" in table and "triton/FLOPs" in table
    assert "| encoder | dtype | tokens |" in table
