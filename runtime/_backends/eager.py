"""The eager torch backend: the checkpoint a bundle was exported from, cut into the same stages
as the export, run by PyTorch. For development and for checking a device against eager."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ponder._core.errors import BundleError, MissingDependencyError
from ponder.runtime._backends.base import Backend

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    """`checkpoint`: the ponder checkpoint folder (default: the path recorded at export);
    `model`: the unconverted model, for checkpoints of user models (as for `ponder.load`)."""

    name = "torch"

    def __init__(
        self,
        bundle: Any,
        *,
        checkpoint: str | Path | None = None,
        model: Any = None,
        threads: int | None = None,
    ):
        try:
            import torch
        except ImportError as e:
            raise MissingDependencyError("torch", "train", "the torch backend") from e
        from ponder import load
        from ponder.export._stages.plan import plan_stages

        self._torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        recorded = checkpoint or bundle.manifest.config.get("checkpoint_path")
        if not recorded:
            raise BundleError(
                f"bundle {bundle.root} does not record the checkpoint it was exported from; "
                "pass it: Engine.load(bundle, backend='torch', checkpoint=PATH)"
            )
        path = Path(recorded)
        if not path.exists():
            raise BundleError(
                f"the torch backend needs the checkpoint {path}, which does not exist here; "
                "pass checkpoint=PATH (the folder `ponder.save` wrote), or use the onnxruntime "
                "or executorch backend"
            )
        moe = (bundle.manifest.moe or {}).get("mode", "grouped")
        # a transformer is traced whole and cut again: on the bundle's own sample inputs
        with np.load(bundle.samples_path) as samples:
            example = {t.name: torch.from_numpy(samples[t.name]) for t in bundle.manifest.inputs}
        plan = plan_stages(load(path, model=model).eval(), moe, example)
        names = [[t.name for t in s.outputs] for s in bundle.manifest.stages]
        if [s.outputs for s in plan.stages] != names:
            raise BundleError(
                f"the checkpoint {path} cuts into stages {[s.outputs for s in plan.stages]}, the "
                f"bundle into {names}: it is not the checkpoint this bundle was exported from"
            )
        self.stages = [s.module for s in plan.stages]
        self.outputs = names
        self.description = f"eager torch {torch.__version__} on {path}"

    def run_stage(self, index: int, feeds: dict[str, Any]) -> dict[str, Any]:
        with self._torch.inference_mode():
            got = self.stages[index](*feeds.values())
        return dict(zip(self.outputs[index], got, strict=True))

    def from_numpy(self, array: np.ndarray) -> Any:
        return self._torch.from_numpy(np.ascontiguousarray(array))

    def to_numpy(self, value: Any) -> np.ndarray:
        if isinstance(value, self._torch.Tensor):
            return value.detach().numpy()
        return np.asarray(value)
