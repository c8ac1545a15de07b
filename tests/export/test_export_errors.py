"""Export's refusals: an exported stage that returns a missing, misshaped or different output
(named by format, stage and output), and the export formats' missing packages."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

import ponder
from ponder import ExportMismatchError, MissingDependencyError
from ponder.export import _validate, export_bundle
from ponder.export._formats.onnx import write_onnx_stage
from ponder.export._formats.pte import write_pte
from ponder.export._validate import check_comparisons, compare_outputs
from ponder.runtime._backends.base import OnnxRuntimeBackend
from ponder.runtime._backends.executorch import ExecuTorchBackend


def test_a_missing_output_is_named():
    expected = {"hidden_0": np.zeros((2, 4)), "exit_logp_0": np.zeros((2, 5))}
    with pytest.raises(
        ExportMismatchError,
        match=r"onnx stage 0 did not return output 'exit_logp_0' \(it returned \['hidden_0'\]\)",
    ):
        compare_outputs("onnx", 0, {"hidden_0": np.zeros((2, 4))}, expected)


def test_a_misshaped_output_is_named_with_both_shapes():
    with pytest.raises(
        ExportMismatchError, match=r"pte stage 1 output 'logits' has shape \(2, 4\), eager \(2, 5\)"
    ):
        compare_outputs("pte", 1, {"logits": np.zeros((2, 4))}, {"logits": np.zeros((2, 5))})


def test_tolerance_is_atol_plus_rtol_times_the_largest_eager_value():
    # fp32: allowed = 1e-4 + 1e-4 * max|eager| = 1e-4 + 1e-4 * 10 = 1.1e-3
    eager = {"logits": np.array([[10.0, -2.0]])}
    [inside] = compare_outputs("onnx", 0, {"logits": eager["logits"] + [[1.0e-3, 0]]}, eager)
    [outside] = compare_outputs("onnx", 0, {"logits": eager["logits"] + [[0, -1.2e-3]]}, eager)
    assert inside.allowed == pytest.approx(1.1e-3) and inside.ok
    assert outside.max_abs_error == pytest.approx(1.2e-3) and not outside.ok
    check_comparisons([inside])  # within tolerance: no error
    with pytest.raises(
        ExportMismatchError,
        match=r"onnx stage 0 output 'logits': max \|error\| 0\.0012 > allowed 0\.0011",
    ):
        check_comparisons([inside, outside])


def _mlp_with_an_exit() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Linear(12, 16), nn.ReLU()),
        nn.Sequential(nn.Linear(16, 16), nn.ReLU()),
        nn.Linear(16, 5),
    )
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=1))
    return model.eval()


@pytest.mark.slow  # two stages traced and written as ONNX: 8 s on a busy 2-core machine
def test_export_refuses_a_stage_that_computes_something_else(tmp_path, monkeypatch):
    class Perturbed(OnnxRuntimeBackend):
        """ONNX Runtime's answers, with the first exit's log-probs of stage 0 moved by 0.01."""

        def run_stage(self, index, feeds):
            got = super().run_stage(index, feeds)
            if index == 0:
                got["exit_logp_0"] = got["exit_logp_0"] + 0.01
            return got

    monkeypatch.setattr(_validate, "OnnxRuntimeBackend", Perturbed)
    out = tmp_path / "bundle"
    with pytest.raises(
        ExportMismatchError,
        match=r"onnx stage 0 output 'exit_logp_0': max \|error\| 0\.01 > allowed",
    ) as info:
        export_bundle(
            _mlp_with_an_exit(), torch.randn(4, 12), out, target="onnx", echo=lambda line: None
        )
    assert "stage 1" not in str(info.value)  # only the output that differs is named
    assert not (out / "manifest.json").exists()  # no bundle claims to be valid
    report = json.loads((out / "validation.json").read_text())
    failed = [(c["stage"], c["output"]) for c in report["comparisons"] if not c["ok"]]
    assert not report["ok"] and failed == [(0, "exit_logp_0")]


def _without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for module in modules:  # `import m` now fails, as if m were not installed
        monkeypatch.setitem(sys.modules, module, None)


def test_pte_export_and_runner_name_the_export_extra(monkeypatch, tmp_path):
    _without(monkeypatch, "executorch", "executorch.exir", "executorch.runtime")
    with pytest.raises(
        MissingDependencyError, match=r"ExecuTorch \(\.pte\) export.*pip install 'ponder\[export\]'"
    ):
        write_pte([], tmp_path / "model.pte", metadata={})
    with pytest.raises(
        MissingDependencyError, match=r"the executorch backend.*pip install 'ponder\[export\]'"
    ):
        ExecuTorchBackend.from_file(tmp_path / "model.pte", [["logits"]])


def test_onnx_export_and_runner_name_the_onnx_extra(monkeypatch, tmp_path):
    _without(monkeypatch, "onnxscript", "onnxruntime")
    with pytest.raises(
        MissingDependencyError, match=r"ONNX export.*'onnxscript'.*pip install 'ponder\[onnx\]'"
    ):
        write_onnx_stage(None, None, tmp_path / "stage_0.onnx")  # the import comes first
    with pytest.raises(
        MissingDependencyError,
        match=r"the onnxruntime backend.*'onnxruntime'.*pip install 'ponder\[onnx\]'",
    ):
        OnnxRuntimeBackend.from_files([tmp_path / "stage_0.onnx"])
