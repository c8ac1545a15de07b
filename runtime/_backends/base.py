"""Backends run one bundle stage on named inputs: ONNX Runtime (torch-free), the ExecuTorch
runtime and eager torch. A registry maps names to factories that import their runtime lazily."""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
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
# short names users may write (CLI --provider, Engine.load(providers=[...]))
PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


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

    @property
    def cost_key(self) -> str:
        """Names the cost table `ponder profile` stores beside the bundle for this backend
        (costs.<key>.json): stage times measured on a GPU must not predict the CPU's."""
        return self.name

    def take(self, value: Any, rows: np.ndarray) -> Any:
        """The rows `rows` (numpy int indices) of a stage output, in the runtime's array type:
        what the engine carries on for the samples that did not leave at an exit."""
        return value[rows]


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
    """Providers to ask for, best first: `wanted` (ONNX Runtime names or the short "tensorrt",
    "cuda", "cpu"; each must be available), else TensorRT, CUDA and CPU as far as this
    onnxruntime build offers them."""
    if wanted:
        wanted = [PROVIDER_NAMES.get(p.lower(), p) for p in wanted]
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


def tensorrt_cache_dir(path: Path, ort_version: str) -> Path:
    """Where TensorRT engines built for the stage file `path` are kept between runs:
    $PONDER_TRT_CACHE (else $XDG_CACHE_HOME/ponder/tensorrt, else ~/.cache/ponder/tensorrt),
    one folder per file content and onnxruntime version. ONNX Runtime does not notice a changed
    model in its engine cache, so the folder is keyed by the file's sha256: a re-exported
    stage gets a new folder and never loads a stale engine."""
    root = os.environ.get("PONDER_TRT_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "ponder" / "tensorrt"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return Path(root) / f"{path.stem}-{digest}-ort{ort_version}"


def tensorrt_profiles(
    inputs: Sequence[Any], max_batch: int, max_tokens: int | None
) -> dict[str, str] | None:
    """TensorRT optimization profiles for one stage: every input from 1 row (and 1 token) to
    the bundle's max_batch (max_tokens), optimised for 1 row (a device's request) and
    max_tokens. Samples leaving at exits give each stage ever-changing batch sizes; without
    explicit profiles TensorRT builds a new engine each time a shape leaves the ranges it has
    seen. None where a dimension is neither fixed, batch nor tokens (TensorRT's own profiles)."""
    ranges = {"batch": (1, 1, max_batch)}
    if max_tokens:
        ranges["tokens"] = (1, max_tokens, max_tokens)
    shapes: list[list[str]] = [[], [], []]
    for tensor in inputs:
        dims = []
        for dim in tensor.shape:
            if isinstance(dim, int):
                dims.append((dim, dim, dim))
            elif dim in ranges:
                dims.append(ranges[dim])
            else:
                return None
        for i in range(3):
            shapes[i].append(f"{tensor.name}:" + "x".join(str(d[i]) for d in dims))
    keys = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
    return {key: ",".join(s) for key, s in zip(keys, shapes, strict=True)}


def provider_options(
    providers: list[str],
    path: Path,
    ort_version: str,
    device_id: int,
    trt_fp16: bool,
    profiles: dict[str, str] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(provider, options) pairs for one stage session: the GPU providers on `device_id`;
    TensorRT with its engine and timing caches on disk (`tensorrt_cache_dir`), so a restart
    loads the engines instead of building them again (minutes for a large model), the stage's
    shape `profiles` (`tensorrt_profiles`), and fp16 only when asked (the bundle's tolerances
    were set in fp32)."""
    pairs: list[tuple[str, dict[str, Any]]] = []
    for name in providers:
        if name == "TensorrtExecutionProvider":
            cache = tensorrt_cache_dir(path, ort_version)
            cache.mkdir(parents=True, exist_ok=True)
            options = {
                "device_id": device_id,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache),
                "trt_fp16_enable": trt_fp16,
                **(profiles or {}),
            }
            pairs.append((name, options))
        elif name == "CUDAExecutionProvider":
            pairs.append((name, {"device_id": device_id}))
        else:
            pairs.append((name, {}))
    return pairs


class OnnxRuntimeBackend(Backend):
    """One ONNX Runtime session per stage file (fp32, or the int8 files with `int8`).

    On CUDA or TensorRT (`providers`, best first; default: the best this build offers) the
    stages' outputs stay on the GPU and go to the next stage from there (IOBinding): only
    the exit heads' outputs, which the exit rule reads, and the final answer come back to the
    host. When samples leave at an exit, the tensors carried on for the others make one trip
    through the host to drop those rows (ONNX Runtime has no gather on its own values).
    `io_binding` forces the bound path on (also on the CPU, where it is tested) or off.
    `device_id` picks the GPU; `trt_fp16` lets TensorRT compute in fp16."""

    name = "onnxruntime"

    def __init__(
        self,
        bundle: Any,
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
        int8: bool = False,
        io_binding: bool | None = None,
        device_id: int = 0,
        trt_fp16: bool = False,
    ):
        ort = _import_onnxruntime()
        m = bundle.manifest
        paths = [bundle.onnx_path(stage.index, int8=int8) for stage in m.stages]
        export = m.config.get("export", {})
        max_batch, max_tokens = export.get("max_batch", 256), export.get("max_tokens")
        profiles = [tensorrt_profiles(s.inputs, max_batch, max_tokens) for s in m.stages]
        gpu = {"io_binding": io_binding, "device_id": device_id, "trt_fp16": trt_fp16}
        self._load(
            ort, paths, providers, threads, "int8" if int8 else "fp32", **gpu, profiles=profiles
        )

    @classmethod
    def from_files(
        cls,
        paths: Sequence[str | Path],
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
        precision: str = "fp32",
        io_binding: bool | None = None,
        device_id: int = 0,
        trt_fp16: bool = False,
    ) -> OnnxRuntimeBackend:
        """Stage files without their bundle (as export checks them before the manifest exists):
        `paths[i]` is stage i. `precision` only goes into the description."""
        backend = cls.__new__(cls)
        ort = _import_onnxruntime()
        gpu = {"io_binding": io_binding, "device_id": device_id, "trt_fp16": trt_fp16}
        backend._load(ort, [Path(p) for p in paths], providers, threads, precision, **gpu)
        return backend

    def _load(
        self,
        ort: Any,
        paths: list[Path],
        providers: list[str] | None,
        threads: int | None,
        precision: str,
        *,
        io_binding: bool | None = None,
        device_id: int = 0,
        trt_fp16: bool = False,
        profiles: list[dict[str, str] | None] | None = None,
    ) -> None:
        chosen = choose_providers(ort.get_available_providers(), providers)
        self._ort, self.threads = ort, threads
        profiles = profiles or [None] * len(paths)
        self.sessions = [
            _session(
                ort,
                path,
                threads,
                provider_options(chosen, path, ort.__version__, device_id, trt_fp16, profile),
            )
            for path, profile in zip(paths, profiles, strict=True)
        ]
        self.outputs = [[o.name for o in session.get_outputs()] for session in self.sessions]
        used = self.sessions[0].get_providers()
        skipped = [p.removesuffix("ExecutionProvider") for p in PROVIDER_ORDER if p not in used]
        self.providers = used
        on_gpu = used[0] in GPU_PROVIDERS
        self.device = ("cuda", device_id) if on_gpu else ("cpu", 0)
        self.io_binding = on_gpu if io_binding is None else bool(io_binding)
        self.description = (
            f"onnxruntime {ort.__version__}, {precision} stage files, providers "
            f"{[p.removesuffix('ExecutionProvider') for p in used]}"
            + (f" on GPU {device_id}" if on_gpu else "")
            + (", IOBinding" if self.io_binding else "")
            + (f" (not in this build or not usable here: {skipped})" if skipped else "")
        )

    @property
    def cost_key(self) -> str:
        if self.device[0] == "cpu":
            return self.name
        short = self.providers[0].removesuffix("ExecutionProvider").lower()
        return f"{self.name}-{short}"  # onnxruntime-cuda, onnxruntime-tensorrt

    def run_stage(self, index: int, feeds: dict[str, Any]) -> dict[str, Any]:
        names = self.outputs[index]
        if not self.io_binding:
            feeds = {k: self.to_numpy(v) for k, v in feeds.items()}
            return dict(zip(names, self.sessions[index].run(names, feeds), strict=True))
        session = self.sessions[index]
        binding = session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        kind, device_id = self.device
        for name in names:
            binding.bind_output(name, kind, device_id)
        session.run_with_iobinding(binding)
        return dict(zip(names, binding.get_outputs(), strict=True))

    def from_numpy(self, array: np.ndarray) -> Any:
        if not self.io_binding:
            return array
        kind, device_id = self.device
        return self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), kind, device_id)

    def to_numpy(self, value: Any) -> np.ndarray:
        return value if isinstance(value, np.ndarray) else value.numpy()

    def take(self, value: Any, rows: np.ndarray) -> Any:
        if isinstance(value, np.ndarray):
            return value[rows]
        return self.from_numpy(value.numpy()[rows])  # through the host: see the class docstring


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise MissingDependencyError("onnxruntime", "onnx", "the onnxruntime backend") from e
    return ort


def _session(ort: Any, path: Path, threads: int | None, providers: list[Any]) -> Any:
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
