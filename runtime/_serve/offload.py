"""Offloading without losing a request: a split bundle's device half and `OffloadClient` send
each request to the cloud half; when that fails (refused, timeout, an HTTP error, a malformed
answer), the same request is answered by the bundle's `local/` model on the device, and the
result says where its answer came from. The next request tries the cloud again, so offloading
resumes as soon as the service is back."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ponder._core.errors import BundleError
from ponder.runtime._offload.split import SplitBundle
from ponder.runtime._serve.client import OffloadClient, OffloadError

__all__ = ["OffloadResult", "Offloader"]

CLOUD, LOCAL, FALLBACK = "cloud", "local", "fallback"


@dataclass
class OffloadResult:
    """prediction [N]; source: "cloud", "local" (not offloaded) or "fallback" (offloading
    failed: `error` says why); logits [N, C] from the cloud (None otherwise); bytes_sent: the
    payloads' bytes; seconds: the whole call."""

    prediction: np.ndarray
    source: str
    logits: np.ndarray | None
    error: str | None
    bytes_sent: int
    seconds: float


class Offloader:
    """A split bundle's device side: offload to `url` or answer locally."""

    def __init__(
        self,
        bundle: str | Path,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 2.0,
        edge: str = "onnx",
        backend: str = "onnxruntime",
    ):
        from ponder.runtime._engine.engine import Engine

        self.split = SplitBundle.load(bundle, edge=edge)
        local = self.split.manifest.get("local")
        if local is None:
            raise BundleError(
                f"{bundle} has no local/ bundle to fall back on; export it with local=True "
                "(ponder export --split writes one)"
            )
        self.local = Engine.load(self.split.root / local["folder"], backend)
        self.client = OffloadClient(
            url, self.split.manifest["model_id"], token=token, timeout_s=timeout_s
        )

    def close(self) -> None:
        self.client.close()

    def run(
        self,
        inputs: dict[str, np.ndarray],
        *,
        keep: float = 1.0,
        codec: str | None = None,
        offload: bool = True,
    ) -> OffloadResult:
        """Answer a batch: offloaded at `keep` and `codec` (the device half runs here), or
        locally when `offload` is False or offloading fails."""
        start = time.perf_counter()
        error, sent = None, 0
        if offload:
            codec = codec or self.split.split["codec"]
            payloads = self.split.send(inputs, keep, codec)
            sent = sum(len(p) for p in payloads)
            try:
                logits = self.client.infer_payloads(payloads, self.split.params(keep, codec))
                return OffloadResult(
                    logits.argmax(-1), CLOUD, logits, None, sent, time.perf_counter() - start
                )
            except OffloadError as e:
                error = f"{e.kind}: {e}"
        answer = self.local.run(_local_inputs(inputs))
        return OffloadResult(
            answer.prediction, FALLBACK if offload else LOCAL, None, error, sent,
            time.perf_counter() - start,
        )  # fmt: skip


def _local_inputs(inputs: dict[str, Any]) -> Any:
    """The engine takes one array for a model with a single input "x", else the dict."""
    return inputs["x"] if list(inputs) == ["x"] else inputs
