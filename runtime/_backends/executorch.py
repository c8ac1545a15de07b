"""The ExecuTorch backend: the bundle's `.pte` program, one method per stage, run by the
ExecuTorch runtime's Python binding; tensors stay torch tensors from stage to stage."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ponder._core.errors import BundleError, MissingDependencyError
from ponder.runtime._backends.base import Backend
from ponder.runtime._bundle.layout import stage_method

__all__ = ["METADATA_METHOD", "ExecuTorchBackend", "quiet_imports"]

# The constant method that ponder.export writes into every program: JSON with the model id and
# the stage methods, so a program can be matched to its manifest.
METADATA_METHOD = "ponder_metadata"


@contextlib.contextmanager
def quiet_imports() -> Iterator[None]:
    """executorch imports torchao, which logs a warning for every optional CUDA library it
    cannot load on a CPU machine; that does not concern the user."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class ExecuTorchBackend(Backend):
    """Loads model.pte (or the int8 program) and every stage method once.

    Sets torch to one intra-op thread: the binding returns each output through torch, and
    torch's spinning OpenMP pool then held the cores the next XNNPACK method needed (measured
    by `ponder bench export` on a 2-core VM: staged ViT-S 1.11-1.27x monolithic, 1.00x with
    torch at one thread).
    """

    name = "executorch"

    def __init__(self, bundle: Any, *, int8: bool = False):
        _runtime()  # a missing package is reported before anything about the bundle
        path = bundle.int8_pte_path if int8 else bundle.pte_path
        self._load(path)
        _check_metadata(self.metadata(), path, bundle.manifest)
        stages = bundle.manifest.stages
        missing = self._load_methods(
            [s.method for s in stages], [[t.name for t in s.outputs] for s in stages]
        )
        if missing:
            raise BundleError(
                f"{path} lacks the stage methods {missing} its manifest names; the program "
                "comes from another export: copy the whole bundle folder again or re-export"
            )
        self._describe(path, "int8" if int8 else "fp32")

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        outputs: Sequence[Sequence[str]],
        *,
        methods: Sequence[str] | None = None,
        precision: str = "fp32",
    ) -> ExecuTorchBackend:
        """A program without its bundle (as export checks it before the manifest exists):
        `outputs[i]` names what stage i returns; its method is `methods[i]`, by default the
        bundle's `stage_<i>`. `precision` only goes into the description."""
        path = Path(path)
        backend = cls.__new__(cls)
        backend._load(path)
        names = (
            list(methods) if methods is not None else [stage_method(i) for i in range(len(outputs))]
        )
        missing = backend._load_methods(names, [list(o) for o in outputs])
        if missing:
            raise BundleError(
                f"{path} has no method(s) {missing}; it has {sorted(backend._program.method_names)}"
            )
        backend._describe(path, precision)
        return backend

    def _load(self, path: Path) -> None:
        torch, Runtime = _runtime()
        self._torch, self._path = torch, path
        torch.set_num_threads(1)
        try:
            self._program = Runtime.get().load_program(path)
        except (RuntimeError, ValueError) as e:
            raise BundleError(f"ExecuTorch cannot load {path}: {e}; re-export the bundle") from e

    def _load_methods(self, methods: list[str], outputs: list[list[str]]) -> list[str]:
        """Load every stage method; returns the names the program lacks (nothing loaded then)."""
        missing = [m for m in methods if m not in self._program.method_names]
        if not missing:
            self.methods = [self._program.load_method(m) for m in methods]
            self.outputs = outputs
        return missing

    def _describe(self, path: Path, precision: str) -> None:
        self.description = f"executorch runtime, {path.name} ({precision}), torch at 1 thread"

    def metadata(self) -> dict[str, Any]:
        """The JSON that ponder export wrote into the program (model id, stage methods, ...);
        BundleError if the program has none."""
        if METADATA_METHOD not in self._program.method_names:
            raise BundleError(
                f"{self._path} has no {METADATA_METHOD} method, so it was not written by ponder "
                "export; re-export the bundle"
            )
        return json.loads(self._program.load_method(METADATA_METHOD).execute([])[0])

    def run_stage(self, index: int, feeds: dict[str, Any]) -> dict[str, Any]:
        got = self.methods[index].execute(list(feeds.values()))
        return dict(zip(self.outputs[index], got, strict=True))

    def from_numpy(self, array: np.ndarray) -> Any:
        return self._torch.from_numpy(np.ascontiguousarray(array))

    def to_numpy(self, value: Any) -> np.ndarray:
        return value.numpy() if isinstance(value, self._torch.Tensor) else np.asarray(value)


def _check_metadata(meta: dict[str, Any], path: Path, manifest: Any) -> None:
    """The program's own metadata must describe the model and stage methods of the manifest."""
    methods = [s.method for s in manifest.stages]
    if meta.get("model_id") != manifest.model_id or meta.get("methods") != methods:
        raise BundleError(
            f"{path.name} describes model {meta.get('model_id')!r} with methods "
            f"{meta.get('methods')}, the manifest {manifest.model_id!r} with {methods}: the files "
            "come from different exports; copy the whole bundle folder again or re-export"
        )


def _runtime() -> tuple[Any, Any]:
    """(torch, executorch.runtime.Runtime), or a MissingDependencyError naming the extra."""
    try:
        with quiet_imports():
            import torch
            from executorch.runtime import Runtime
    except ImportError as e:
        missing = "torch" if e.name == "torch" else "executorch"  # executorch runs on torch
        raise MissingDependencyError(missing, "export", "the executorch backend") from e
    return torch, Runtime
