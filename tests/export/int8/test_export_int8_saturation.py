"""int8 ONNX files are exact on every CPU: no weight reaches past the range where ONNX Runtime's
uint8 x int8 kernels saturate on x86 without VNNI (VPMADDUBSW adds two u8*s8 products in int16).
The saturation is emulated in numpy, so these tests fail on any CPU if the setting regresses."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="needs the onnx extra: pip install 'ponder[onnx]'")
pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'ponder[onnx]'")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnxruntime import quantization as q  # noqa: E402

from ponder._core.errors import InternalError  # noqa: E402
from ponder.export._int8.quantize import (  # noqa: E402
    SATURATION_FREE,
    _Reader,
    check_saturation_free,
    quantize_stages_onnx,
    saturating_weights,
)

pytestmark = pytest.mark.onnx

K, M = 16, 4  # MatMul [N, K] x [K, M]


def _vpmaddubsw_matmul(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """u8 [N, K] x s8 [K, M] as AVX2 computes it: adjacent pairs along K summed in int16 with
    saturation, then accumulated in int32."""
    a, w = a.astype(np.int32), w.astype(np.int32)
    pairs = a[:, 0::2, None] * w[None, 0::2, :] + a[:, 1::2, None] * w[None, 1::2, :]  # [N, K/2, M]
    return np.clip(pairs, -32768, 32767).sum(axis=1)


def _matmul_file(path, weight: np.ndarray) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", M])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")],
        "matmul",
        [x],
        [y],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


def _int8_weight(path) -> np.ndarray:
    (weight,) = [t for t in onnx.load(str(path)).graph.initializer if t.name == "w_quantized"]
    return numpy_helper.to_array(weight)


@pytest.fixture
def stage(tmp_path):
    """A one-MatMul stage whose weights all sit at their column's largest magnitude (a ReLU
    layer's worst case: every product as large as it can be), and positive calibration data."""
    rng = np.random.default_rng(0)
    weight = np.repeat(rng.uniform(0.5, 1.0, size=(1, M)), K, axis=0).astype(np.float32)
    weight[:, 1] *= -1
    src = tmp_path / "stage_0.onnx"
    _matmul_file(src, weight)
    feeds = [{"x": rng.uniform(0, 1, size=(8, K)).astype(np.float32)} for _ in range(2)]
    return src, feeds


def test_full_range_weights_saturate_and_are_refused(stage, tmp_path):
    src, feeds = stage
    dst = tmp_path / "full" / "stage_0.onnx"
    dst.parent.mkdir()
    q.quantize_static(
        str(src),
        str(dst),
        _Reader(feeds),
        quant_format=q.QuantFormat.QDQ,
        per_channel=True,
        activation_type=q.QuantType.QUInt8,
        weight_type=q.QuantType.QInt8,
    )
    w = _int8_weight(dst)
    assert np.abs(w.astype(int)).max() == 127
    a = np.full((1, K), 255, dtype=np.uint8)  # activations at the top of their range
    exact = a.astype(np.int32) @ w.astype(np.int32)
    assert not np.array_equal(_vpmaddubsw_matmul(a, w), exact)  # the premise: AVX2 gets it wrong
    assert saturating_weights(dst) == [("w_quantized", 127)]
    with pytest.raises(InternalError, match="reduce_range=True"):
        check_saturation_free(dst)


def test_exported_weights_cannot_saturate(stage, tmp_path):
    src, feeds = stage
    (dst,) = quantize_stages_onnx([src], tmp_path / "int8", [feeds])
    w = _int8_weight(dst)
    assert np.abs(w.astype(int)).max() <= SATURATION_FREE
    assert saturating_weights(dst) == []
    a = np.full((3, K), 255, dtype=np.uint8)
    a[1] = np.arange(K) * 17 % 256  # and a row of mixed values
    exact = a.astype(np.int32) @ w.astype(np.int32)
    np.testing.assert_array_equal(_vpmaddubsw_matmul(a, w), exact)
