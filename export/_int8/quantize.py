"""int8 post-training quantization of the stages: one int8 `.pte` (pt2e with the XNNPACK
quantizer, lowered to XNNPACK) and int8 ONNX files (ONNX Runtime static QDQ), both calibrated on
each stage's real inputs (`_quantize_accuracy` compares them with fp32 on held-out data)."""

from __future__ import annotations

import ast
import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.export import Dim

from ponder._core.errors import ConfigError, InternalError, MissingDependencyError
from ponder._moe.config import MoEFFN
from ponder.export._formats.pte import write_pte
from ponder.export._stages.plan import ExitTail, Stage, StagePlan, run_stages
from ponder.export._stages.trace import export_stage, portable_conv_shapes
from ponder.runtime._backends.executorch import quiet_imports

__all__ = [
    "SATURATION_FREE",
    "calibration_feeds",
    "check_saturation_free",
    "quantize_stage",
    "quantize_stages_onnx",
    "quantize_stages_pte",
    "saturating_weights",
    "stage_calibration_inputs",
]

# What stays fp32 in both formats, by the class of the module a node was traced in:
# - exit tails (pool, head, ZTW ensemble). They cost little, and on the demo digits CNN (3 ZTW
#   exits) quantizing them too made the exit log-probs' max error 1.9x (ONNX) to 3x (.pte)
#   larger, and exit 0 agree with fp32 on 98.3% (ONNX) and 96.7% (.pte) of the test images
#   instead of 99.2%;
# - MoE layers. Rounding flips which experts a token gets (the gate keeps expert i when its
#   predicted norm >= tau * max): on the test MoE MLP, ONNX with quantized routers was off by
#   43% of the hidden state's largest value (64 random rows), and with fp32 routers but int8
#   experts by 20% (200 rows: the second layer's router reads the first's rounded output).
#   The XNNPACK quantizer has no pattern for the experts' stacked weights anyway, only for
#   their bias adds, and with grouped experts those q/dq pairs fell outside the delegate, where
#   ExecuTorch has no kernels for them ("Missing out variants").
FP32 = (ExitTail, MoEFFN)
# Largest |int8 weight| for which ONNX Runtime's uint8-activation x int8-weight (U8S8) kernels
# are exact on every CPU. Without VNNI, x86 (AVX2, AVX-512 without VNNI) multiplies with
# VPMADDUBSW, which adds two adjacent u8*s8 products in int16 and saturates at 32767: with
# 8-bit weights 2 * 255 * 127 = 64770 overflows (seen on an AVX2-only AMD EPYC: stage errors
# 1.2-1.8x the tolerance and exit 0 agreeing with fp32 on 79% of the images), with 7-bit ones
# (reduce_range) 2 * 255 * 64 = 32640 cannot. VNNI (VPDPBUSD) and ARM's dot products
# accumulate in int32 and are exact either way.
SATURATION_FREE = 64
CLASSES = "pkg.torch.onnx.class_hierarchy"  # ONNX node metadata: classes of the enclosing modules

Runs = list[list[tuple[torch.Tensor, ...]]]  # per stage, per calibration batch: its inputs
Feeds = list[list[dict[str, np.ndarray]]]  # the same as ONNX Runtime feeds


def stage_calibration_inputs(plan: StagePlan, batches: list[dict[str, torch.Tensor]]) -> Runs:
    """Each stage's inputs on every calibration batch (model input name -> tensor), computed by
    the fp32 eager stages: per stage, one tuple of input tensors per batch."""
    if not batches:
        raise ConfigError("int8 quantization needs at least one calibration batch")
    per_stage: Runs = [[] for _ in plan.stages]
    for batch in batches:
        for inputs, run in zip(per_stage, run_stages(plan, batch), strict=True):
            inputs.append(tuple(run["inputs"].values()))
    return per_stage


def calibration_feeds(plan: StagePlan, runs: Runs) -> Feeds:
    """`stage_calibration_inputs` as ONNX Runtime feeds: per stage, {input name: array}."""
    return [
        [{n: t.numpy() for n, t in zip(stage.inputs, args, strict=True)} for args in batches]
        for stage, batches in zip(plan.stages, runs, strict=True)
    ]


def _type_name(kind: type | str) -> str:
    """Export records a module's class as "module.QualName" (or as the class itself)."""
    return kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"


def _names(classes: tuple[type, ...]) -> set[str]:
    return {_type_name(c) for c in classes}


def _pt2e():
    """The XNNPACK quantizer (int8 activations, symmetric per-channel int8 weights) that leaves
    the modules of `FP32` fp32, and torchao's prepare/convert."""
    try:
        with quiet_imports():
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer,
                get_symmetric_quantization_config,
            )
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY
    except ImportError as e:
        raise MissingDependencyError("executorch", "export", "int8 ExecuTorch export") from e

    class BodyQuantizer(XNNPACKQuantizer):
        # conv+BN patterns are for QAT: prepare_pt2e folds BN into the conv before annotating,
        # so they never match here, and tracing them took 11.8 of the 14.9 s that quantizing
        # the demo digits CNN's 4 stages took (2-core CPU, shared); the program is unchanged.
        SUPPORTED_PATTERNS = tuple(p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if not p.is_qat)

        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            # The base class turns scalar operands of add/mul into float32 tensor attributes,
            # which turned a text encoder's integer position arithmetic into float indices
            # ("tensors used as indices must be long ..."); scalar add/mul stay fp32 instead.
            return model

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            # Annotations are dropped afterwards, not avoided with a filter function: with one,
            # the quantizer still gave ops that keep their input's scale (mean, view, ...) an
            # annotation, so pooled features were rounded to the feature map's int8 steps
            # before the exit head's LayerNorm (head 0's logits: 8x the error, tiny ZTW CNN).
            model = super().annotate(model)
            fp32 = _names(FP32)
            for node in model.graph.nodes:
                stack = node.meta.get("nn_module_stack", {}).values()
                if any(_type_name(kind) in fp32 for _, kind in stack):
                    node.meta.pop(Q_ANNOTATION_KEY, None)
            return model

    quantizer = BodyQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    return quantizer, prepare_pt2e, convert_pt2e


def _same_dynamic_shapes(program: torch.export.ExportedProgram, count: int) -> tuple[dict, ...]:
    """The dynamic dims of `program`'s `count` user inputs, with the bounds it was traced with,
    so the quantized stage is traced again exactly as the fp32 one was (batch, tokens)."""
    bounds = {str(symbol): r for symbol, r in program.range_constraints.items()}
    dims: dict[str, Dim] = {}
    shapes = []
    for node in [n for n in program.graph.nodes if n.op == "placeholder"][-count:]:
        spec = {}
        for i, size in enumerate(node.meta["val"].shape):
            if isinstance(size, torch.SymInt):
                name = str(size)
                if name not in dims:
                    low, high = bounds[name].lower, bounds[name].upper
                    dims[name] = Dim(name, min=int(low), max=int(high) if high.is_finite else None)
                spec[i] = dims[name]
        shapes.append(spec)
    return tuple(shapes)


def quantize_stage(
    stage: Stage, batches: list[tuple[torch.Tensor, ...]]
) -> torch.export.ExportedProgram:
    """pt2e: trace the stage (dynamic batch), insert observers, run the calibration `batches`,
    fold to int8 quantize/dequantize pairs, and trace the result again with the same dims."""
    if not batches or batches[0][0].shape[0] < 2:
        raise ConfigError(
            "int8 quantization needs calibration batches, the first of >= 2 rows (torch.export "
            "would treat a batch of one as a fixed size)"
        )
    quantizer, prepare_pt2e, convert_pt2e = _pt2e()
    example = batches[0]
    program = export_stage(stage, example)
    shapes = _same_dynamic_shapes(program, len(example))
    with torch.no_grad(), portable_conv_shapes(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The tensor attribute .*last_mask")
        observed = prepare_pt2e(program.module(), quantizer)
        for args in batches:
            observed(*args)
        quantized = convert_pt2e(observed)
        return torch.export.export(quantized, example, dynamic_shapes=shapes, strict=False)


def quantize_stages_pte(
    plan: StagePlan, calib_runs: Runs, path: str | Path, *, metadata: dict[str, Any]
) -> Path:
    """Quantize every stage on its calibration inputs (`stage_calibration_inputs`) and write
    them as the methods `stage_<i>` of one int8 program lowered to XNNPACK, at `path`."""
    programs = [quantize_stage(s, b) for s, b in zip(plan.stages, calib_runs, strict=True)]
    return write_pte(programs, Path(path), delegate="xnnpack", metadata=metadata)


class _Reader:
    """An onnxruntime CalibrationDataReader (it checks for `get_next`) over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def _fp32_nodes(path: Path) -> list[str]:
    """The ONNX nodes traced inside a module of `FP32`, by the classes the exporter records
    (graph optimisation drops that record, so this reads the exporter's file)."""
    import onnx

    fp32, names = _names(FP32), []
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        classes = {p.key: p.value for p in node.metadata_props}.get(CLASSES)
        if classes and fp32 & set(ast.literal_eval(classes)):
            names.append(node.name)
    return names


@contextlib.contextmanager
def _no_preprocess_advice() -> Iterator[None]:
    """quantize_static logs 'Please consider (to run) pre-processing' on the root logger for
    every file; we do not pre-process on purpose (see quantize_stages_onnx)."""

    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def quantize_stages_onnx(
    fp32_paths: list[str | Path], out_dir: str | Path, calib_feeds: Feeds
) -> list[Path]:
    """ONNX Runtime static quantization of each fp32 stage file into `out_dir` (same names):
    QDQ, per-channel symmetric int8 weights in 7 bits, uint8 activations calibrated (min/max) on
    the stage's feeds (`calibration_feeds`); exit tails and MoE layers stay fp32. Every file
    written is checked with `check_saturation_free`."""
    try:
        from onnxruntime import quantization as q
    except ImportError as e:
        raise MissingDependencyError("onnxruntime", "onnx", "int8 ONNX export") from e
    # No quant_pre_process (ORT's shape inference and graph optimisation): on the demo digits
    # CNN it changed no error or accuracy and made the files 3.7% smaller, but its symbolic shape
    # inference fails on grouped MoE stages, and its optimiser drops the node metadata that
    # `_fp32_nodes` reads.
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for src, feeds in zip(fp32_paths, calib_feeds, strict=True):
        dst = out_dir / Path(src).name
        with _no_preprocess_advice():
            q.quantize_static(
                str(src),
                str(dst),
                _Reader(feeds),
                quant_format=q.QuantFormat.QDQ,
                per_channel=True,
                # uint8 activations, int8 weights in 7 bits ([-64, 64]); see SATURATION_FREE.
                # Measured on the test digits CNN (2 SDN exits), 64 images, 1 thread, AMD EPYC
                # with AVX-512 VNNI, onnxruntime 1.32: against fp32 the chain ran 0.66x with
                # reduce_range, 0.61x with full-range weights, 1.07x with U8U8 and 1.17x with
                # S8S8; exit accuracy was the same with all four, the largest stage error grew
                # from 1-1.4% to 1.8-3.4% of the largest value with the 7-bit weights. On the
                # demo CNN (3 ZTW exits, 360 test images) 7-bit weights cost exit 0 0.83 points
                # and exit 1 0.28 against fp32, 8-bit ones exit 0 0.28 (on this VNNI CPU).
                activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
                reduce_range=True,
                nodes_to_exclude=_fp32_nodes(Path(src)),
            )
        check_saturation_free(dst)
        written.append(dst)
    return written


def saturating_weights(path: str | Path) -> list[tuple[str, int]]:
    """The int8 weight initializers of the ONNX file at `path` whose values reach past
    +-SATURATION_FREE (name, largest |value|): these can saturate ONNX Runtime's U8S8 kernels
    on x86 CPUs without VNNI."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8}
    found = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in weights:
            largest = int(
                np.abs(numpy_helper.to_array(weights[node.input[0]]).astype(np.int32)).max()
            )
            if largest > SATURATION_FREE:
                found.append((node.input[0], largest))
    return found


def check_saturation_free(path: str | Path) -> None:
    """Refuse an int8 ONNX file that could give wrong answers on some x86 CPUs (see
    SATURATION_FREE), whatever the CPU running the export."""
    found = saturating_weights(path)
    if found:
        shown = ", ".join(f"{name} (|w| up to {w})" for name, w in found[:3])
        raise InternalError(
            f"{Path(path).name}: int8 weights beyond +-{SATURATION_FREE} ({shown}) can saturate "
            "ONNX Runtime's uint8 x int8 kernels on x86 CPUs without VNNI; the quantizer must "
            "use reduce_range=True"
        )
