"""A split bundle at run time, torch-free: the device half (`edge`: the model up to the split
block, returning its hidden state and each token's selection score) on ONNX Runtime or
ExecuTorch, token selection and payloads in numpy, and the cloud half (`tail/tail.onnx`) on
ONNX Runtime, fed from payloads alone.

Layout of a split bundle folder (written by `ponder.export.export_split`):

    split.json        the manifest: the split (block, selector, keep levels, codecs, the
                      params every payload carries), each file with its sha256, and the
                      inputs and outputs of both halves
    edge.onnx         the device half, ONNX
    edge.pte          the device half, ExecuTorch (method "edge"), when exported for it
    tail/tail.onnx    the cloud half: inputs `tokens` [B, K, D] (and `attention_mask` [B, K]
                      where the model reads one), output `logits`
    samples.npz       sample inputs and what the eager split model computed from them, per
                      keep level and codec (`ponder verify` compares against them)
    local/            the model without the split as a device bundle (manifest.json, model.pte,
                      onnx/, with its early exits): what the device runs when it answers a
                      request itself (`ponder.runtime.Engine`)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ponder._core.errors import BundleError, ConfigError, MissingDependencyError
from ponder.runtime._bundle.compare import Comparison, check_comparisons, compare_outputs

if TYPE_CHECKING:
    from ponder.runtime._bundle.verify import Verification
from ponder.runtime._bundle.digest import sha256_file
from ponder.runtime._offload.payload import Payload, decode_payload, encode_payload

__all__ = [
    "EDGE_METHOD",
    "SPLIT_FORMAT",
    "SPLIT_MANIFEST",
    "SplitBundle",
    "index_array",
    "select_tokens",
    "verify_split",
]

SPLIT_MANIFEST = "split.json"
SPLIT_FORMAT = "ponder-split"
SPLIT_SCHEMA = 1
EDGE_ONNX, EDGE_PTE, TAIL_ONNX, SPLIT_SAMPLES = (
    "edge.onnx", "edge.pte", "tail/tail.onnx", "samples.npz",
)  # fmt: skip
EDGE_METHOD = "edge"
LOCAL = "local"
HIDDEN, SCORES, TOKENS, MASK, LOGITS = (
    "hidden", "token_scores", "tokens", "attention_mask", "logits",
)  # fmt: skip


def select_tokens(
    scores: np.ndarray, real: np.ndarray, keep: float, anchor: str = "first"
) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of `ponder.split_model`'s selection: per sample, its pooling token (first,
    or last real) and the top-scored others among its real tokens, `keep` of them in all
    (rounded up, at least one), in position order. Returns index [B, K] and kept [B, K]."""
    batch, t = real.shape
    counts = real.sum(1)
    wanted = np.minimum(
        np.maximum(np.ceil(counts * float(keep)).astype(np.int64), 1), np.maximum(counts, 1)
    )
    score = np.where(real, scores.astype(np.float32), -np.inf)
    positions = np.broadcast_to(np.arange(t), (batch, t))
    if anchor == "last":
        anchors = np.maximum(np.where(real, positions, -1).max(1), 0)
    else:
        anchors = np.zeros(batch, np.int64)
    score[np.arange(batch), anchors] = np.inf
    rank = np.argsort(np.argsort(-score, axis=1, kind="stable"), axis=1, kind="stable")
    chosen = (rank < wanted[:, None]) & (real | (counts[:, None] == 0))
    group = np.where(chosen, 0, np.where(real, 2, 1))
    order = np.argsort(group * t + positions, axis=1, kind="stable")
    width = int(wanted.max()) if batch else 0
    return order[:, :width], np.arange(width)[None, :] < wanted[:, None]


def index_array(positions: np.ndarray) -> np.ndarray:
    """Kept token positions in the smallest unsigned dtype that holds them (uint8 up to 256
    tokens)."""
    top = int(positions.max()) if positions.size else 0
    return positions.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32)


@dataclass
class SplitBundle:
    """A split bundle loaded for running: `send` on the device, `receive` in the cloud."""

    root: Path
    manifest: dict[str, Any]
    edge_backend: str = "onnx"

    @classmethod
    def load(cls, path: str | Path, *, edge: str = "onnx", check_hashes: bool = True):
        """Read `path`'s split.json and its files (sha256 checked); edge: "onnx" or
        "executorch" for the device half."""
        root = Path(path)
        manifest = read_split_manifest(root)
        if check_hashes:
            _check_files(root, manifest)
        if edge not in ("onnx", "executorch"):
            raise ConfigError(f"edge={edge!r}: the device half runs on 'onnx' or 'executorch'")
        if edge == "executorch" and EDGE_PTE not in manifest["files"]:
            raise BundleError(f"{root} has no {EDGE_PTE}: it was exported without ExecuTorch")
        bundle = cls(root, manifest, edge)
        bundle._edge = None
        bundle._tail = None
        return bundle

    @property
    def split(self) -> dict[str, Any]:
        return self.manifest["split"]

    @property
    def offload_points(self) -> list[Any]:
        """The `OffloadPoint`s (keep × codec, accuracy, payload bytes) measured at export on
        labelled calibration data; empty when the export had no labels."""
        from ponder.runtime._policy.offload import OffloadPoint

        return [OffloadPoint.from_dict(d) for d in self.manifest.get("offload_points", [])]

    def params(self, keep: float, codec: str) -> dict[str, Any]:
        """What a payload for this split at `keep` and `codec` carries (and the cloud checks)."""
        return {**self.split["params"], "keep": keep, "codec": codec}

    def _check(self, keep: float, codec: str) -> None:
        if codec not in self.split["codecs"]:
            raise ConfigError(f"codec {codec!r} is not one of this split's {self.split['codecs']}")
        if not 0 < keep <= 1:
            raise ConfigError(f"keep must be in (0, 1], got {keep}")

    def edge(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The device half on `inputs`: {"hidden": [B, T, D], "token_scores": [B, T]}."""
        names = [i["name"] for i in self.manifest["edge"]["inputs"]]
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ConfigError(f"missing inputs {missing}; the device half takes {names}")
        if self._edge is None:
            self._edge = _edge_backend(self.root, self.edge_backend)
        backend = self._edge
        feeds = {n: backend.from_numpy(np.asarray(inputs[n])) for n in names}
        got = backend.run_stage(0, feeds)
        return {k: backend.to_numpy(v) for k, v in got.items()}

    def send(
        self, inputs: dict[str, np.ndarray], keep: float = 1.0, codec: str | None = None
    ) -> list[bytes]:
        """Device side: run the edge, keep each sample's tokens, one payload per sample."""
        codec = codec or self.split["codec"]
        self._check(keep, codec)
        out = self.edge(inputs)
        mask = inputs.get(MASK)
        hidden = out[HIDDEN]
        real = np.asarray(mask) != 0 if mask is not None else np.ones(hidden.shape[:2], dtype=bool)
        if keep < 1:
            index, kept = select_tokens(out[SCORES], real, keep, self.split["anchor"])
        else:
            index, kept = select_tokens(real.astype(np.float32), real, 1.0, self.split["anchor"])
        params, level = self.params(keep, codec), self.split["zstd_level"]
        payloads = []
        for b in range(hidden.shape[0]):
            positions = index[b, kept[b]]
            extra = {"index": index_array(positions)} if keep < 1 else None
            tokens = np.ascontiguousarray(hidden[b, positions][None], dtype=np.float32)
            payloads.append(
                encode_payload({"tokens": tokens}, codec, extra=extra, params=params,
                               zstd_level=level)
            )  # fmt: skip
        return payloads

    def receive(
        self, payloads: Sequence[bytes], expect: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Cloud side: decode each payload (params checked against this split: block,
        selector, device weights; `expect` adds more), pad them into one batch, run the tail;
        the logits [B, C] in payload order."""
        if not payloads:
            raise ConfigError("no payloads to run")
        fixed = {k: v for k, v in self.split["params"].items() if k not in ("keep", "codec")}
        decoded: list[Payload] = [
            decode_payload(p, expect={**fixed, **(expect or {})}) for p in payloads
        ]
        tokens = [d.tensors["tokens"][0] for d in decoded]  # [k_b, D]
        width = self.split["width"]
        for t in tokens:
            if t.ndim != 2 or t.shape[1] != width:
                raise ConfigError(
                    f"a payload's tokens are {t.shape}; this split sends [tokens, {width}]"
                )
        longest = max(len(t) for t in tokens)
        batch = np.zeros((len(tokens), longest, width), np.float32)
        mask = np.zeros((len(tokens), longest), np.int64)
        for b, t in enumerate(tokens):
            batch[b, : len(t)], mask[b, : len(t)] = t, 1
        return self.run_tail(batch, mask)

    def run_tail(self, tokens: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """The cloud half on decoded tokens [B, K, D] and their mask [B, K] (None: all real):
        the logits [B, C]."""
        tokens = np.asarray(tokens, np.float32)
        width = self.split["width"]
        if tokens.ndim != 3 or tokens.shape[2] != width or tokens.shape[1] < 1:
            raise ConfigError(f"tokens are {list(tokens.shape)}; this split takes [B, K, {width}]")
        if mask is None:
            mask = np.ones(tokens.shape[:2], np.int64)
        mask = np.asarray(mask)
        if mask.shape != tokens.shape[:2]:
            raise ConfigError(
                f"attention_mask is {list(mask.shape)}; the tokens need {list(tokens.shape[:2])}"
            )
        if self._tail is None:
            from ponder.runtime._backends.base import OnnxRuntimeBackend

            self._tail = OnnxRuntimeBackend.from_files(
                [self.root / TAIL_ONNX], providers=["CPUExecutionProvider"]
            )
        feeds = {TOKENS: tokens}
        if MASK in self.manifest["tail"]["inputs"]:
            feeds[MASK] = mask.astype(self.manifest["tail"]["mask_dtype"])
        return self._tail.run_stage(0, feeds)[LOGITS]

    def run(
        self, inputs: dict[str, np.ndarray], keep: float = 1.0, codec: str | None = None
    ) -> np.ndarray:
        """Both halves in this process, through real payloads: the logits [B, C]."""
        return self.receive(self.send(inputs, keep, codec))


def read_split_manifest(root: Path) -> dict[str, Any]:
    path = root / SPLIT_MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} has no {SPLIT_MANIFEST}: it is not a split bundle")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{path} is not valid JSON ({e}); re-export the split bundle") from e
    if manifest.get("format") != SPLIT_FORMAT or manifest.get("schema_version") != SPLIT_SCHEMA:
        raise BundleError(
            f"{path} is format {manifest.get('format')!r} v{manifest.get('schema_version')}; "
            f"this ponder reads {SPLIT_FORMAT} v{SPLIT_SCHEMA}: re-export with this version"
        )
    for key in ("split", "edge", "tail", "files"):
        if key not in manifest:
            raise BundleError(f"{path} lacks its {key!r} section; re-export the split bundle")
    return manifest


def _check_files(root: Path, manifest: dict[str, Any]) -> None:
    for name, digest in manifest["files"].items():
        path = root / name
        if not path.is_file():
            raise BundleError(f"{path} is missing; copy the whole split bundle folder again")
        if sha256_file(path) != digest:
            raise BundleError(
                f"{path} does not match the sha256 in {SPLIT_MANIFEST} (changed or corrupt); "
                "copy the bundle again or re-export it"
            )


def _edge_backend(root: Path, kind: str) -> Any:
    outputs = [[HIDDEN, SCORES]]
    if kind == "executorch":
        from ponder.runtime._backends.executorch import ExecuTorchBackend

        return ExecuTorchBackend.from_file(root / EDGE_PTE, outputs, methods=[EDGE_METHOD])
    from ponder.runtime._backends.base import OnnxRuntimeBackend

    return OnnxRuntimeBackend.from_files([root / EDGE_ONNX], providers=["CPUExecutionProvider"])


# what verification allows per codec: the device half's numbers differ from eager by float32
# rounding (seen: <= 6e-7 on the tiny test models, 1.3e-8 on HF BERT, every codec), and a
# quantizing codec can turn such a difference into one code step on a value, which moves the
# logits by far less than this
LOSSY = {"atol": 1e-4, "rtol": 5e-3}


def verify_split(
    path: str | Path,
    echo: Callable[[str], None] = print,
    *,
    require_all: bool = False,
) -> Verification:
    """Re-check a split bundle: hashes, then for each device runtime the edge's outputs and,
    per keep level and codec, the kept positions and the tail's logits through real payloads,
    against what the eager split model computed at export. Raises BundleError (files,
    manifest) or ExportMismatchError (results); an edge format whose runtime is not installed
    is reported as not executed (MissingDependencyError with `require_all`)."""
    from ponder.runtime._bundle.verify import Verification

    bundle = SplitBundle.load(path)
    files = bundle.manifest["files"]
    echo(f"{bundle.root}: {SPLIT_MANIFEST} read, {len(files)} files match their sha256")
    with np.load(bundle.root / SPLIT_SAMPLES) as data:
        stored = {k: data[k] for k in data.files}
    names = [i["name"] for i in bundle.manifest["edge"]["inputs"]]
    inputs = {n: stored[f"input_{n}"] for n in names}
    kinds = ["onnx", "executorch"] if EDGE_PTE in files else ["onnx"]
    rows: list[Comparison] = []
    not_executed: dict[str, MissingDependencyError] = {}
    split = bundle.split
    for kind in kinds:
        runner = SplitBundle.load(path, edge=kind, check_hashes=False)
        try:
            got = runner.edge(inputs)
        except MissingDependencyError as e:
            if require_all:
                raise
            not_executed[f"edge ({kind})"] = e
            echo(f"edge on {kind}: NOT executed here, only its sha256 was checked: {e}")
            continue
        ran = compare_outputs(
            f"edge.{kind}", 0, got, {HIDDEN: stored[HIDDEN], SCORES: stored[SCORES]}
        )
        for keep in split["keeps"]:
            for codec in split["codecs"]:
                ran += _check_halves(runner, inputs, got, stored, keep, codec, kind)
        errors = [r.max_abs_error for r in ran if r.output.startswith("logits")]
        echo(
            f"edge on {kind} + tail on onnxruntime: {len(split['keeps'])} keep levels x "
            f"{len(split['codecs'])} codecs through real payloads, max |logit error| "
            f"{max(errors):.2g}"
        )
        rows += ran
    local = bundle.manifest.get("local")
    if local is not None:
        folder = bundle.root / local["folder"]
        if sha256_file(folder / "manifest.json") != local["manifest_sha256"]:
            raise BundleError(
                f"{folder / 'manifest.json'} is not the one {SPLIT_MANIFEST} names (changed or "
                "from another export); copy the whole split bundle again or re-export it"
            )
        from ponder.runtime._bundle.verify import verify_bundle

        echo(f"{folder}: the model without the split, for local answers")
        checked = verify_bundle(folder, lambda line: echo("  " + line), require_all=require_all)
        rows += checked.rows
        not_executed.update({f"local {k}": v for k, v in checked.not_executed.items()})
    if not rows:
        raise next(iter(not_executed.values()))
    check_comparisons(rows)
    return Verification(bundle.root, rows, not_executed)


def _check_halves(
    runner: SplitBundle,
    inputs: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    stored: dict[str, np.ndarray],
    keep: float,
    codec: str,
    kind: str,
) -> list[Comparison]:
    """The tail's logits through real payloads at `keep` and `codec` (and below keep 1 the
    kept positions) against the eager split model's."""
    key = sample_key(keep, codec)
    logits = runner.receive(runner.send(inputs, keep, codec))
    ref = stored[f"logits_{key}"]
    tol = {"atol": 1e-4, "rtol": 1e-4} if codec == "fp32" else LOSSY
    scale = float(np.abs(ref).max())
    error = float(np.abs(logits - ref).max()) if logits.shape == ref.shape else float("inf")
    rows = [
        Comparison(f"{kind}+tail", 0, f"logits[{key}]", error, scale,
                   tol["atol"] + tol["rtol"] * scale)
    ]  # fmt: skip
    if keep < 1:
        real = _real(inputs, got[HIDDEN])
        index, kept = select_tokens(got[SCORES], real, keep, runner.split["anchor"])
        same = np.array_equal(np.where(kept, index, -1), stored[f"index_{key}"])
        rows.append(Comparison(kind, 0, f"kept positions[{key}]", 0.0 if same else 1.0, 1.0, 0.0))
    return rows


def _real(inputs: dict[str, np.ndarray], hidden: np.ndarray) -> np.ndarray:
    mask = inputs.get(MASK)
    return np.asarray(mask) != 0 if mask is not None else np.ones(hidden.shape[:2], dtype=bool)


def sample_key(keep: float, codec: str) -> str:
    return f"{keep:g}_{codec}"


def keep_levels(keeps: Sequence[float]) -> list[float]:
    levels = sorted({float(k) for k in keeps} | {1.0}, reverse=True)
    for k in levels:
        if not 0 < k <= 1 or math.isnan(k):
            raise ConfigError(f"keep levels must be in (0, 1], got {list(keeps)}")
    return levels
