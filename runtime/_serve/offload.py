"""Offloading without losing a request: a split bundle's device half and `OffloadClient` send
each request to the cloud half; when that fails (refused, timeout, an HTTP error, a malformed
answer), the same request is answered by the bundle's `local/` model on the device, and the
result says where its answer came from.

Without a policy every request is offloaded (and the next request tries the cloud again, so
offloading resumes as soon as the service is back). With one (`Offloader.policy(spec)`, an
`OffloadPolicy`), each request goes where the policy says — a local operating point or an
offload point — the policy learns the device half's time, the link and the server's time from
every call, and after a failure it backs off and then probes the service again."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ponder._core.errors import BundleError
from ponder.runtime._offload.split import SplitBundle
from ponder.runtime._policy.offload import OffloadDecision, OffloadPolicy
from ponder.runtime._policy.points import OperatingPoint
from ponder.runtime._policy.spec import PolicySpec
from ponder.runtime._serve.client import OffloadClient, OffloadError

__all__ = ["OffloadResult", "Offloader"]

CLOUD, LOCAL, FALLBACK = "cloud", "local", "fallback"


@dataclass
class OffloadResult:
    """prediction [N]; source: "cloud", "local" (not offloaded) or "fallback" (offloading
    failed: `error` says why); logits [N, C] from the cloud (None otherwise); bytes_sent: the
    payloads' bytes; seconds: the whole call; decision: the policy's, when one decided."""

    prediction: np.ndarray
    source: str
    logits: np.ndarray | None
    error: str | None
    bytes_sent: int
    seconds: float
    decision: OffloadDecision | None = None


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

    def policy(
        self,
        spec: PolicySpec | None = None,
        *,
        power_w: float | None = None,
        radio_power_w: float = 1.0,
        **options: Any,
    ) -> OffloadPolicy:
        """An `OffloadPolicy` over the local bundle's operating points and this bundle's
        offload points, on this client's link estimate; spec: the budgets (`load_policy`,
        `PolicySpec.simple(latency_ms=...)`); power_w: the device's draw while computing
        (energy estimates; default: the local cost table's); options: OffloadPolicy's."""
        points = self.split.offload_points
        if not points:
            raise BundleError(
                f"{self.split.root} has no offload points (accuracy and bytes per keep × "
                "codec): re-export it from a checkpoint with labelled data, `ponder export "
                "CHECKPOINT --split K`"
            )
        local = self.local.policy(spec, points=self._local_points(), power_w=power_w)
        return OffloadPolicy(
            local, points, self.client.link, power_w=power_w, radio_power_w=radio_power_w,
            **options,
        )  # fmt: skip

    def _local_points(self) -> list[OperatingPoint] | None:
        """The local bundle's points; without any, its full model with the accuracy measured
        at export, so that the policy can weigh it against offloading."""
        if self.local.points:
            return None
        full = self.local.default_point
        return [replace(full, accuracy=self.split.manifest.get("local_accuracy", full.accuracy))]

    def run(
        self,
        inputs: dict[str, np.ndarray],
        *,
        keep: float = 1.0,
        codec: str | None = None,
        offload: bool = True,
        policy: OffloadPolicy | None = None,
        state: Any = None,
    ) -> OffloadResult:
        """Answer a batch: offloaded at `keep` and `codec` (the device half runs here), or
        locally when `offload` is False or offloading fails; with `policy`, where it decides
        under device `state` (keep, codec and offload are then the policy's)."""
        start = time.perf_counter()
        decision = None if policy is None else policy.decide(state)
        if decision is not None:
            offload = decision.offload
            keep, codec = (decision.point.keep, decision.point.codec) if offload else (1.0, None)
        error, sent = None, 0
        if offload:
            codec = codec or self.split.split["codec"]
            edge_start = time.perf_counter()
            payloads = self.split.send(inputs, keep, codec)
            if policy is not None:
                policy.observe_edge((time.perf_counter() - edge_start) * 1e3, len(payloads))
            sent = sum(len(p) for p in payloads)
            sending = time.perf_counter()
            try:
                logits = self.client.infer_payloads(payloads, self.split.params(keep, codec))
            except OffloadError as e:
                error = f"{e.kind}: {e}"
                if policy is not None:
                    policy.failed(error)
            else:
                if policy is not None:
                    received = self.client.last_answer_bytes
                    policy.observe_offload(self.client.server_ms, received, len(payloads),
                                           time.perf_counter() - sending)  # fmt: skip
                seconds = time.perf_counter() - start
                return OffloadResult(logits.argmax(-1), CLOUD, logits, None, sent, seconds,
                                     decision)  # fmt: skip
        point = None if decision is None else decision.local.point
        answer = self.local.run(_local_inputs(inputs), point=point)
        if policy is not None:
            policy.local.observe_stages(answer)
        return OffloadResult(
            answer.prediction, FALLBACK if offload else LOCAL, None, error, sent,
            time.perf_counter() - start, decision,
        )  # fmt: skip


def _local_inputs(inputs: dict[str, Any]) -> Any:
    """The engine takes one array for a model with a single input "x", else the dict."""
    return inputs["x"] if list(inputs) == ["x"] else inputs
