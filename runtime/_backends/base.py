"""Backends run one bundle stage on named inputs: ONNX Runtime (torch-free), the ExecuTorch
runtime and eager torch. A registry maps names to factories that import their runtime lazily."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ponder._core.errors import BundleError, ConfigError, MissingDependencyError
from ponder._core.registry import Registry

__all__ = [
    "BACKENDS",
    "Backend",
    "OnnxRuntimeBackend",
    "list_backends",
    "load_backend",
    "session_options",
]

log = logging.getLogger(__name__)

BACKENDS: Registry[Any] = Registry("backend")

# ONNX Runtime execution providers in the order the engine prefers them.
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class Backend:
    """One loaded bundle on one runtime. `run_stage` takes and returns the runtime's own array
    type (numpy for ONNX Runtime, torch tensors for ExecuTorch and torch), so tensors passed
    from stage to stage are never converted; `to_numpy` is used only for what the exit rule
    reads and what the result returns."""

    name: str = ""
    description: str = ""  # what was loaded and on what, in words
    threads: int | None = None  # intra-op threads asked for (None: the runtime's default)

    def run_stage(self, index: int, feeds: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def from_numpy(self, array: np.ndarray) -> Any:
        return array

    def to_numpy(self, value: Any) -> np.ndarray:
        return np.asarray(value)


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime options for chained stage sessions: no intra-op spinning. DESIGN.md measured
    four stage sessions on 2 cores at 1.55x one whole-model session with the default spinning,
    1.03x with it off (spinning threads steal the cores the next session needs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return options


def choose_providers(available: list[str], wanted: list[str] | None = None) -> list[str]:
    """Providers to ask for, best first: `wanted` (each must be available), else TensorRT, CUDA
    and CPU as far as this onnxruntime build offers them."""
    if wanted:
        missing = [p for p in wanted if p not in available]
        if missing:
            raise ConfigError(
                f"ONNX Runtime provider(s) {missing} are not in this onnxruntime build, which "
                f"offers {available}; for CUDA/TensorRT install onnxruntime-gpu "
                "(pip install onnxruntime-gpu) on a machine with the NVIDIA libraries"
            )
        return list(wanted)
    chosen = [p for p in PROVIDER_ORDER if p in available]
    return chosen or list(available)


class OnnxRuntimeBackend(Backend):
    """One ONNX Runtime session per stage file (fp32, or the int8 files with `int8`)."""

    name = "onnxruntime"

    def __init__(
        self,
        bundle: Any,
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
        int8: bool = False,
    ):
        ort = _import_onnxruntime()
        paths = [bundle.onnx_path(stage.index, int8=int8) for stage in bundle.manifest.stages]
        self._load(ort, paths, providers, threads, "int8" if int8 else "fp32")

    @classmethod
    def from_files(
        cls,
        paths: Sequence[str | Path],
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> OnnxRuntimeBackend:
        """Stage files without their bundle (as export checks them before the manifest exists):
        `paths[i]` is stage i. `precision` only goes into the description."""
        backend = cls.__new__(cls)
        ort = _import_onnxruntime()
        backend._load(ort, [Path(p) for p in paths], providers, threads, precision)
        return backend

    def _load(
        self,
        ort: Any,
        paths: list[Path],
        providers: list[str] | None,
        threads: int | None,
        precision: str,
    ) -> None:
        chosen = choose_providers(ort.get_available_providers(), providers)
        self.threads = threads
        self.sessions = [_session(ort, path, threads, chosen) for path in paths]
        self.outputs = [[o.name for o in session.get_outputs()] for session in self.sessions]
        used = self.sessions[0].get_providers()
        skipped = [p.removesuffix("ExecutionProvider") for p in PROVIDER_ORDER if p not in used]
        self.providers = used
        self.description = (
            f"onnxruntime {ort.__version__}, {precision} stage files, providers "
            f"{[p.removesuffix('ExecutionProvider') for p in used]}"
            + (f" (not in this build or not usable here: {skipped})" if skipped else "")
        )

    def run_stage(self, index: int, feeds: dict[str, Any]) -> dict[str, Any]:
        names = self.outputs[index]
        return dict(zip(names, self.sessions[index].run(names, feeds), strict=True))


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise MissingDependencyError("onnxruntime", "onnx", "the onnxruntime backend") from e
    return ort


def _session(ort: Any, path: Path, threads: int | None, providers: list[str]) -> Any:
    try:
        return ort.InferenceSession(str(path), session_options(threads), providers=providers)
    except Exception as e:  # ORT raises its own exception types for bad files
        raise BundleError(f"ONNX Runtime cannot load {path}: {e}; re-export the bundle") from e


@BACKENDS.register("onnxruntime")
def _onnxruntime() -> type[Backend]:
    """ONNX Runtime: TensorRT, CUDA or CPU provider; runs without torch."""
    return OnnxRuntimeBackend


@BACKENDS.register("executorch")
def _executorch() -> type[Backend]:
    """The ExecuTorch runtime on the bundle's model.pte (XNNPACK or portable kernels)."""
    from ponder.runtime._backends.executorch import ExecuTorchBackend

    return ExecuTorchBackend


@BACKENDS.register("torch")
def _torch() -> type[Backend]:
    """Eager torch on the checkpoint the bundle was exported from (for development)."""
    from ponder.runtime._backends.eager import TorchBackend

    return TorchBackend


def load_backend(name: str, bundle: Any, **options: Any) -> Backend:
    """The registered backend `name` on `bundle`; options it does not take are refused by name
    (read from its constructor's keyword-only parameters) before anything loads. Each entry
    of the registry returns the class, importing its module only then (none imports torch)."""
    cls = BACKENDS.get(name)()
    params = inspect.signature(cls.__init__).parameters.values()
    takes = sorted(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise ConfigError(
            f"backend {name!r} does not take option(s) {unknown}; it takes {takes or 'none'}"
        )
    return cls(bundle, **options)


def list_backends() -> dict[str, str]:
    """Registered backends and what they run on."""
    return {name: (BACKENDS.get(name).__doc__ or "").strip() for name in BACKENDS.names()}
