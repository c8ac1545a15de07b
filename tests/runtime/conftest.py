"""Small bundles on disk for the runtime tests: dummy payload bytes, a real manifest."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ponder.runtime import manifest_digest, write_manifest


def _tensor(name: str, shape: list, dtype: str = "float32") -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape}


def _stage(i: int, inputs: list, outputs: list, blocks: list, flops: int, total: int) -> dict:
    return {
        "index": i,
        "method": f"stage_{i}",
        "onnx": f"onnx/stage_{i}.onnx",
        "inputs": inputs,
        "outputs": outputs,
        "blocks": blocks,
        "flops": flops,
        "cumulative_flops": total,
        "params": 100 * (i + 1),
        "exit": i < 2,
    }


def manifest_without_files() -> dict[str, Any]:
    """A three-stage digits classifier, as the export writer hands it to write_manifest."""
    x = _tensor("x", ["batch", 1, 8, 8])
    hidden = _tensor("hidden", ["batch", 32, 8, 8])
    exit_logp = _tensor("exit_logp", ["batch", 10])
    d = {
        "format": "ponder-bundle",
        "schema_version": "1.0",
        "ponder_version": "0.1.0",
        "model_id": "digits_cnn",
        "created_utc": "2026-11-22T20:00:00Z",
        "task": "classification",
        "classes": 10,
        "inputs": [x],
        "stages": [
            _stage(0, [x], [hidden, exit_logp], [0, 1], 1000, 1000),
            _stage(1, [hidden], [hidden, exit_logp], [2], 500, 1500),
            _stage(2, [hidden], [_tensor("logits", ["batch", 10])], [3], 250, 1750),
        ],
        "exit_rule": {"name": "max_prob", "ensembled": False, "thresholds": [0.9, 0.8]},
        "operating_points": [
            {
                "name": "risk_controlled",
                "thresholds": [0.95, 0.9],
                "accuracy": 0.99,
                "flops_fraction": 0.6,
                "moe_tau": None,
                "delta": 0.01,
            }
        ],
        "moe": None,
        "quantization": {"scheme": "int8", "pte": "model_int8.pte", "onnx_dir": "onnx_int8"},
        "config": {"early_exit": {"type": "EarlyExitConfig", "version": 1, "blocks": None}},
    }
    return json.loads(json.dumps(d))  # no shared sub-dicts: a test edits one place only


PAYLOADS = {
    "model.pte": b"PTE0" * 64,
    "model_int8.pte": b"PTE8" * 16,
    **{f"onnx/stage_{i}.onnx": bytes([i]) * (40 + i) for i in range(3)},
    **{f"onnx_int8/stage_{i}.onnx": bytes([8, i]) * 10 for i in range(3)},
    "validation.json": b'{"max_abs_error": [1e-6, 2e-6, 1e-6]}',
}


@pytest.fixture
def base_manifest() -> dict[str, Any]:
    return manifest_without_files()


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    """make_bundle(manifest=None, name="bundle") -> folder with payloads and a sealed manifest."""

    def make(manifest: dict[str, Any] | None = None, name: str = "bundle") -> Path:
        root = tmp_path / name
        for rel, data in PAYLOADS.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        write_manifest(root, manifest or manifest_without_files(), list(PAYLOADS))
        return root

    return make


@pytest.fixture
def edit_manifest() -> Callable[..., None]:
    """edit_manifest(root, edit, reseal=True): change manifest.json in place, bypassing
    write_manifest's validation; `reseal` recomputes manifest_sha256 so only the edit is wrong."""

    def edit_(root: Path, edit: Callable[[dict], Any], *, reseal: bool = True) -> None:
        path = root / "manifest.json"
        d = json.loads(path.read_text())
        edit(d)
        if reseal:
            d["manifest_sha256"] = manifest_digest(d)
        path.write_text(json.dumps(d, indent=2))

    return edit_
