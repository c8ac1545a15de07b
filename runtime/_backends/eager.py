"""The eager torch backend: the checkpoint a bundle was exported from, cut into the same stages
as the export, run by PyTorch on the CPU or a CUDA GPU. For development and for checking a
device against eager."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ponder._core.errors import BundleError, ConfigError, MissingDependencyError
from ponder.runtime._backends.base import Backend

__all__ = ["TorchBackend", "move_stage"]


class TorchBackend(Backend):
    """`checkpoint`: the ponder checkpoint folder (default: the path recorded at export);
    `model`: the unconverted model, for checkpoints of user models (as for `ponder.load`);
    `device`: "cpu", "cuda" or "cuda:N"."""

    name = "torch"

    def __init__(
        self,
        bundle: Any,
        *,
        checkpoint: str | Path | None = None,
        model: Any = None,
        threads: int | None = None,
        device: str = "cpu",
    ):
        try:
            import torch
        except ImportError as e:
            raise MissingDependencyError("torch", "train", "the torch backend") from e
        from ponder import load
        from ponder.export._stages.plan import plan_stages

        self._torch = torch
        self.device = _parse_device(torch, device)  # before anything loads: a typo fails fast
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
        self.stages = [move_stage(s.module, self.device) for s in plan.stages]
        self.outputs = names
        on = self.device.type
        if on == "cuda":
            on = f"{torch.cuda.get_device_name(self.device)} ({self.device})"
        self.description = f"eager torch {torch.__version__} on {on}, checkpoint {path}"

    def run_stage(self, index: int, feeds: dict[str, Any]) -> dict[str, Any]:
        with self._torch.inference_mode():
            got = self.stages[index](*feeds.values())
        if self.device.type == "cuda":
            # CUDA kernels run asynchronously: without waiting, the engine's stage timings
            # (and cost tables) would measure kernel launches, not the GPU's work
            self._torch.cuda.synchronize(self.device)
        return dict(zip(self.outputs[index], got, strict=True))

    def from_numpy(self, array: np.ndarray) -> Any:
        return self._torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def to_numpy(self, value: Any) -> np.ndarray:
        if isinstance(value, self._torch.Tensor):
            return value.detach().cpu().numpy()
        return np.asarray(value)

    @property
    def cost_key(self) -> str:
        return self.name if self.device.type == "cpu" else f"{self.name}-{self.device.type}"

    def take(self, value: Any, rows: np.ndarray) -> Any:
        """The rows `rows` of a tensor, gathered where it lives: the indices go to its device,
        the tensor does not come to the host."""
        return value[self._torch.from_numpy(rows).to(value.device)]


def _parse_device(torch: Any, device: str) -> Any:
    """The torch.device for "cpu", "cuda" or "cuda:N", refused with what to use instead."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"the torch backend runs on device 'cpu', 'cuda' or 'cuda:N', not {device!r}"
        )
    if parsed.type == "cpu":
        return parsed
    if not torch.cuda.is_available():
        why = (
            f"torch {torch.__version__} is built without CUDA"
            if torch.version.cuda is None
            else "no NVIDIA driver or GPU is visible to torch"
        )
        raise ConfigError(f"no CUDA device here ({why}); use device='cpu'")
    count = torch.cuda.device_count()
    if (parsed.index or 0) >= count:
        raise ConfigError(
            f"device {device!r} does not exist: this machine has {count} CUDA device(s), "
            f"cuda:0 to cuda:{count - 1}"
        )
    return parsed


def move_stage(module: Any, device: Any) -> Any:
    """`module` on `device`, including the devices a trace wrote into its graphs: a traced
    transformer builds its causal mask with `torch.ones(..., device=cpu)`, which `.to()` alone
    leaves on the CPU, next to activations on the GPU."""
    import torch

    module = module.to(device)
    for sub in module.modules():
        if not isinstance(sub, torch.fx.GraphModule):
            continue
        nodes = [n for n in sub.graph.nodes if isinstance(n.kwargs.get("device"), torch.device)]
        for node in nodes:
            node.update_kwarg("device", device)
        if nodes:
            sub.recompile()
    return module
