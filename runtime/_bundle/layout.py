"""Every file and folder name of a bundle, defined once, and the functions that build their
paths (relative to the bundle folder, as the manifest lists them)."""

from __future__ import annotations

__all__ = [
    "INT8_ONNX_DIR",
    "INT8_PTE",
    "MANIFEST",
    "ONNX_DIR",
    "PTE",
    "REPORT",
    "SAMPLES",
    "cost_table",
    "int8_onnx",
    "onnx_file",
    "stage_method",
]

MANIFEST = "manifest.json"  # written last, by write_manifest; lists and hashes every other file
PTE = "model.pte"  # the ExecuTorch program, one method per stage
INT8_PTE = "model_int8.pte"  # its int8 copy (quantization.pte names it)
ONNX_DIR = "onnx"  # one ONNX file per stage (stages[i].onnx names each)
INT8_ONNX_DIR = "onnx_int8"  # their int8 copies, same file names (quantization.onnx_dir)
SAMPLES = "samples.npz"  # the export's default; a manifest names its own in config.export
REPORT = "validation.json"  # every exported output against eager, as export measured it


def stage_method(index: int) -> str:
    """The ExecuTorch method of stage `index`."""
    return f"stage_{index}"


def onnx_file(index: int, folder: str = ONNX_DIR) -> str:
    """The ONNX file of stage `index`."""
    return f"{folder}/stage_{index}.onnx"


def int8_onnx(onnx_dir: str, stage_onnx: str) -> str:
    """Where a stage's int8 ONNX file lives: its fp32 file's name, inside `onnx_dir`."""
    return f"{onnx_dir.rstrip('/')}/{stage_onnx.rsplit('/', 1)[-1]}"


def cost_table(backend: str) -> str:
    """The cost table `ponder profile` measures for `backend` on a device (not listed in the
    manifest: it is written after export)."""
    return f"costs.{backend}.json"
