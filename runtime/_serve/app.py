"""`ponder serve`: the cloud half of a split bundle behind the Open Inference Protocol (KServe
v2) over HTTP — Starlette, our own numpy protocol codec (`protocol.py`), no torch.

Routes: GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}, /v2/models/{name}/ready;
POST /v2/models/{name}/infer with a JSON or binary body. A request carries either

- `payload` (UINT8 [N]): ponder offload payloads as `SplitBundle.send` writes them, one after
  another, with `payload_sizes` (INT64 [B]) when there is more than one; or
- `tokens` (FP32 [B, K, D]) and, where the tail reads one, `attention_mask` (INT64 [B, K]):
  decoded tokens, for a client without ponder's codecs;

and the split's parameters (`split_block`, `selector`, `device_sha256`), which must match the
bundle's: a mismatch is refused with a message, never answered. The answer is `logits`
(FP32 [B, C]), binary when the request asks for it (`binary_data_output`, or per output).

Batching: concurrent requests whose decoded tokens have the same shape (the same token count
K) are gathered for at most `batch_wait_ms` up to `max_batch` rows and run as one tail call
(`batching.py`); /metrics counts the tail calls and rows per call.

Limits: a bearer token when one is configured (constant-time compare; the health routes stay
open), a body-size cap (413 before the body is read when Content-Length says so), at most
`max_concurrency` inferences at once (503 beyond, with Retry-After), and every error a JSON
`{"error": ...}` with a 4xx/5xx status while the server keeps serving. `GET /metrics`:
Prometheus counters (requests by status, latency histogram, bytes in and out, in flight);
each inference also logs one JSON line to the "ponder.serve" logger.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ponder._core.errors import ConfigError, PayloadError, PonderError
from ponder.runtime._offload.split import LOGITS, MASK, TOKENS, SplitBundle
from ponder.runtime._serve.batching import BatchedSplit
from ponder.runtime._serve.protocol import (
    HEADER_LENGTH,
    ProtocolError,
    decode_request,
    encode_response,
)

__all__ = ["CONFIG_ENV", "ServeConfig", "app_from_env", "make_app"]

PAYLOAD, SIZES = "payload", "payload_sizes"
log = logging.getLogger("ponder.serve")  # one JSON line per inference request
CHECKED = ("split_block", "selector", "device_sha256")  # parameters a request must match


class ServeConfig:
    """What `make_app` serves and its limits."""

    def __init__(
        self,
        bundle: str | Path,
        *,
        token: str | None = None,
        max_body_bytes: int = 64 << 20,
        max_concurrency: int = 4,
        max_batch: int = 8,
        batch_wait_ms: float = 2.0,
        timeout_s: float = 30.0,
    ):
        self.bundle = Path(bundle)
        self.timeout_s = timeout_s
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.max_concurrency = max_concurrency
        # a batch gathers at most max_concurrency requests (the rest are refused with 503)
        self.max_batch, self.batch_wait_ms = max_batch, batch_wait_ms

    def to_json(self) -> str:
        return json.dumps({**vars(self), "bundle": str(self.bundle)})

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        d = json.loads(text)
        return cls(d.pop("bundle"), **d)


CONFIG_ENV = "PONDER_SERVE_CONFIG"  # a ServeConfig as JSON, for worker processes


def app_from_env() -> Any:
    """The app of the ServeConfig in $PONDER_SERVE_CONFIG (`ponder serve --workers N`: uvicorn
    starts each worker from this factory)."""
    import os

    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise ConfigError(f"${CONFIG_ENV} is not set; start the server with `ponder serve`")
    return make_app(ServeConfig.from_json(text))


def make_app(config: ServeConfig) -> Any:
    """The Starlette app serving `config.bundle`'s cloud half."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    split = BatchedSplit.load(config.bundle)
    name = split.manifest["model_id"]
    width = split.split["width"]
    busy = asyncio.Semaphore(config.max_concurrency)
    metrics = Metrics()
    batcher = split.batched(
        max_batch=config.max_batch, wait_s=config.batch_wait_ms / 1e3,
        inflight=lambda: metrics.inflight,
    )  # fmt: skip
    # a thread for every admitted request: a batch's requests block their threads while it
    # gathers, and asyncio's default pool (cores + 4 threads) would starve the ones it waits for
    threads = ThreadPoolExecutor(config.max_concurrency, thread_name_prefix="ponder-serve")

    def error(message: str, status: int, **headers: str) -> Response:
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    def authorized(request: Any) -> bool:
        if config.token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {config.token}".encode())

    async def server_meta(request: Any) -> Response:
        return JSONResponse(
            {"name": "ponder", "version": "1", "extensions": ["binary_tensor_data"]}
        )

    async def live(request: Any) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Any) -> Response:
        return JSONResponse({"ready": True})

    def model_or_404(request: Any) -> Response | None:
        if request.path_params["model"] != name:
            return error(
                f"unknown model {request.path_params['model']!r}; this serves {name!r}", 404
            )
        if not authorized(request):
            return error("missing or wrong bearer token (Authorization: Bearer ...)", 401)
        return None

    async def model_meta(request: Any) -> Response:
        refused = model_or_404(request)
        if refused is not None:
            return refused
        tail = split.manifest["tail"]
        inputs = [{"name": TOKENS, "datatype": "FP32", "shape": [-1, -1, width]}]
        if MASK in tail["inputs"]:
            inputs.append({"name": MASK, "datatype": "INT64", "shape": [-1, -1]})
        inputs += [{"name": PAYLOAD, "datatype": "UINT8", "shape": [-1]},
                   {"name": SIZES, "datatype": "INT64", "shape": [-1]}]  # fmt: skip
        return JSONResponse(
            {"name": name, "versions": ["1"], "platform": "onnxruntime_onnx",
             "inputs": inputs, "outputs": [{"name": LOGITS, "datatype": "FP32",
                                            "shape": [-1, -1]}],
             "parameters": {**split.split["params"], "keeps": split.split["keeps"],
                            "codecs": split.split["codecs"]}}
        )  # fmt: skip

    async def model_ready(request: Any) -> Response:
        refused = model_or_404(request)
        return refused or JSONResponse({"name": name, "ready": True})

    async def infer(request: Any) -> Response:
        start = time.perf_counter()
        metrics.inflight += 1
        try:  # a body that trickles in, or a tail that hangs, is cut off at timeout_s
            response = await asyncio.wait_for(infer_once(request), config.timeout_s)
        except TimeoutError:
            response = error(f"not answered within the server's {config.timeout_s:g} s", 504)
        finally:
            metrics.inflight -= 1
            batcher.request_left()
        seconds = time.perf_counter() - start
        size_in = int(request.headers.get("content-length") or 0)
        metrics.record(response.status_code, seconds, size_in, len(response.body))
        log.info(json.dumps({
            "event": "infer", "model": name, "status": response.status_code,
            "ms": round(seconds * 1e3, 3), "bytes_in": size_in,
            "bytes_out": len(response.body),
        }))  # fmt: skip
        return response

    async def metrics_text(request: Any) -> Response:
        if not authorized(request):
            return error("missing or wrong bearer token (Authorization: Bearer ...)", 401)
        text = metrics.text(name) + batcher.metrics_text(name)
        return Response(text, media_type="text/plain; version=0.0.4")

    async def infer_once(request: Any) -> Response:
        refused = model_or_404(request)
        if refused is not None:
            return refused
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
            return error(
                f"body of {declared} bytes is over the {config.max_body_bytes}-byte cap", 413
            )
        if busy.locked():
            return error("the server is at its concurrency limit; retry shortly", 503,
                         **{"Retry-After": "1"})  # fmt: skip
        async with busy:
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > config.max_body_bytes:
                    return error(f"body over the {config.max_body_bytes}-byte cap", 413)
            computing = time.perf_counter()
            try:
                parsed = decode_request(bytes(body), request.headers.get(HEADER_LENGTH))
                loop = asyncio.get_running_loop()
                logits = await loop.run_in_executor(threads, _run, split, parsed)
            except ProtocolError as e:
                return error(str(e), e.status)
            except PayloadError as e:
                return error(f"payload refused: {e}", 400)
            except PonderError as e:
                return error(str(e), 400)
            binary = parsed.binary_outputs or bool(parsed.outputs and parsed.outputs.get(LOGITS))
            # the server's own time (decode, queue, tail): the client tells the link from it
            server_ms = round((time.perf_counter() - computing) * 1e3, 3)
            payload, length = encode_response(
                {LOGITS: logits.astype(np.float32)}, name, model_version="1", id=parsed.id,
                parameters={"server_ms": server_ms}, binary=binary,
            )  # fmt: skip
            headers = {HEADER_LENGTH: str(length)} if length is not None else {}
            kind = "application/octet-stream" if length is not None else "application/json"
            return Response(payload, media_type=kind, headers=headers)

    routes = [
        Route("/v2", server_meta),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models/{model}", model_meta),
        Route("/v2/models/{model}/ready", model_ready),
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        Route("/metrics", metrics_text),
    ]
    app = Starlette(routes=routes)
    app.state.metrics, app.state.batcher, app.state.started = metrics, batcher, time.time()
    return app


class Metrics:
    """Prometheus counters of the infer route: requests by status, latency histogram, bytes
    in and out, requests in flight (text exposition format, no client library)."""

    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self.buckets = [0] * len(self.BUCKETS)
        self.count, self.seconds, self.bytes_in, self.bytes_out, self.inflight = 0, 0.0, 0, 0, 0

    def record(self, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.count += 1
        self.seconds += seconds
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        for i, bound in enumerate(self.BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1

    def text(self, model: str) -> str:
        m = f'model="{model}"'
        lines = [
            "# HELP ponder_requests_total Inference requests by HTTP status.",
            "# TYPE ponder_requests_total counter",
            *(f'ponder_requests_total{{{m},code="{c}"}} {n}'
              for c, n in sorted(self.by_status.items())),
            "# HELP ponder_request_seconds Time to answer an inference request.",
            "# TYPE ponder_request_seconds histogram",
            *(f'ponder_request_seconds_bucket{{{m},le="{b}"}} {n}'
              for b, n in zip(self.BUCKETS, self.buckets, strict=True)),
            f'ponder_request_seconds_bucket{{{m},le="+Inf"}} {self.count}',
            f"ponder_request_seconds_sum{{{m}}} {self.seconds}",
            f"ponder_request_seconds_count{{{m}}} {self.count}",
            "# TYPE ponder_received_bytes_total counter",
            f"ponder_received_bytes_total{{{m}}} {self.bytes_in}",
            "# TYPE ponder_sent_bytes_total counter",
            f"ponder_sent_bytes_total{{{m}}} {self.bytes_out}",
            "# TYPE ponder_requests_in_flight gauge",
            f"ponder_requests_in_flight{{{m}}} {self.inflight}",
        ]  # fmt: skip
        return "\n".join(lines) + "\n"


def _run(split: SplitBundle, request: Any) -> np.ndarray:
    """The tail on a decoded request: payloads, or tokens (and mask) as they are."""
    params = request.parameters
    expected = split.split["params"]
    for key in CHECKED:
        if key in params and params[key] != expected[key]:
            raise PayloadError(
                f"parameter {key}={params[key]!r}, but this cloud half serves "
                f"{key}={expected[key]!r}: the device runs another split or other weights"
            )
    inputs = request.inputs
    if PAYLOAD in inputs:
        data = np.asarray(inputs[PAYLOAD], np.uint8).reshape(-1).tobytes()
        sizes = inputs.get(SIZES)
        sizes = [len(data)] if sizes is None else [int(s) for s in np.asarray(sizes).reshape(-1)]
        if any(s <= 0 for s in sizes) or sum(sizes) != len(data):
            raise ProtocolError(
                f"{SIZES} {sizes} do not add up to the {len(data)} bytes of {PAYLOAD}"
            )
        payloads, start = [], 0
        for size in sizes:
            payloads.append(data[start : start + size])
            start += size
        return split.receive(payloads)
    if TOKENS not in inputs:
        raise ProtocolError(f"send {PAYLOAD!r} (UINT8) or {TOKENS!r} (FP32 [B, K, D])")
    missing = [k for k in CHECKED if k not in params]
    if missing:
        raise ProtocolError(
            f"a request with decoded tokens must name the split in its parameters: {missing}"
        )
    return split.run_tail(inputs[TOKENS], inputs.get(MASK))
