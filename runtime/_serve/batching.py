"""Server-side batching for `ponder serve`: concurrent tail calls of the same shape (the same
token count K after decoding, so the tail's shapes stay static) are gathered for at most a few
milliseconds and run as one call [sum B, K, D]; each request gets exactly its own rows back,
and a request that fails does not fail the others of its batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import numpy as np

from ponder.runtime._offload.split import SplitBundle

__all__ = ["BatchedSplit", "TailBatcher"]

Tail = Callable[[np.ndarray, np.ndarray], np.ndarray]


class _Batch:
    """Requests gathered for one tail call, with their answers (logits or an exception)."""

    def __init__(self) -> None:
        self.items: list[tuple[np.ndarray, np.ndarray]] = []
        self.rows = 0
        self.results: list[Any] = []
        self.done = threading.Event()


class TailBatcher:
    """Runs `tail(tokens [B, K, D], mask [B, K]) -> logits [B, C]` for concurrent callers
    (threads), batched.

    The first caller of a batch (its leader) waits until the batch holds `max_batch` rows, or
    `wait_s` has passed, or no request still in the server (`inflight()` counts them) could
    join it (call `request_left` when a request leaves the server, so that a waiting leader
    sees it); then it runs the tail once for all. So a lone request never waits, and under load
    a request waits at most `wait_s`. A request of more than `max_batch` rows runs alone.
    `max_batch <= 1` or `wait_s <= 0` turns batching off. Batched and lone calls agree to
    ONNX Runtime's float rounding (a GEMM of another height may sum in another order)."""

    BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)  # rows per tail call, for /metrics

    def __init__(
        self,
        tail: Tail,
        *,
        max_batch: int = 8,
        wait_s: float = 0.002,
        inflight: Callable[[], int] = lambda: 0,
    ):
        self.tail, self.max_batch, self.wait_s, self.inflight = tail, max_batch, wait_s, inflight
        self._cond = threading.Condition()
        self._open: dict[tuple, _Batch] = {}  # the batch each shape's callers join
        self._waiting = 0  # callers inside __call__
        self.calls = self.requests = self.rows = 0
        self.histogram = [0] * len(self.BUCKETS)

    def __call__(self, tokens: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        tokens = np.asarray(tokens, np.float32)
        if tokens.ndim != 3 or self.max_batch <= 1 or self.wait_s <= 0:
            return self._alone(tokens, mask)
        mask = np.ones(tokens.shape[:2], np.int64) if mask is None else np.asarray(mask)
        key = (tokens.shape[1:], mask.shape[1:], mask.dtype.str)
        with self._cond:
            batch = self._open.get(key)
            leader = batch is None or batch.rows + len(tokens) > self.max_batch
            if leader:  # a batch that cannot take these rows is left to its own leader
                batch = self._open[key] = _Batch()
            index = len(batch.items)
            batch.items.append((tokens, mask))
            batch.rows += len(tokens)
            self._waiting += 1
            self._cond.notify_all()
            if leader:
                self._gather(key, batch)
        try:
            if leader:
                try:
                    self._execute(batch)
                finally:
                    batch.done.set()
            else:
                batch.done.wait()
        finally:
            with self._cond:
                self._waiting -= 1
        result = batch.results[index]
        if isinstance(result, BaseException):
            raise result
        return result

    def request_left(self) -> None:
        """A request left the server (`inflight()` fell): a leader waiting for it looks again."""
        with self._cond:
            self._cond.notify_all()

    def _gather(self, key: tuple, batch: _Batch) -> None:
        """Wait (holding the condition) while the batch can still grow, then close it."""
        deadline = time.monotonic() + self.wait_s
        while (
            self._open.get(key) is batch
            and batch.rows < self.max_batch
            and self.inflight() > self._waiting  # some request has not reached the tail yet
        ):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        if self._open.get(key) is batch:
            del self._open[key]

    def _execute(self, batch: _Batch) -> None:
        items = batch.items
        if len(items) == 1:
            batch.results = [self._one(*items[0])]
            return
        try:
            logits = self._count(
                np.concatenate([t for t, _ in items]), np.concatenate([m for _, m in items])
            )  # [sum B, C]
        except Exception:  # one bad request must not fail the others:
            batch.results = [self._one(t, m) for t, m in items]  # each alone, its own answer
            return
        bounds = np.cumsum([0] + [len(t) for t, _ in items])
        batch.results = [logits[a:b] for a, b in pairwise(bounds)]

    def _one(self, tokens: np.ndarray, mask: np.ndarray) -> Any:
        """The tail on one request: its logits, or the exception it raised (handed to the
        request's own thread, which raises it)."""
        try:
            return self._count(tokens, mask)
        except Exception as e:  # any error: re-raised in the caller's thread
            return e

    def _alone(self, tokens: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        with self._cond:
            self._waiting += 1
        try:
            return self._count(tokens, mask)
        finally:
            with self._cond:
                self._waiting -= 1

    def _count(self, tokens: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """The tail on `tokens`, counted in the metrics when it answers."""
        logits = self.tail(tokens, mask)
        with self._cond:
            self.calls += 1
            self.rows += len(tokens)
            for i, bound in enumerate(self.BUCKETS):
                if len(tokens) <= bound:
                    self.histogram[i] += 1
        return logits

    def metrics_text(self, model: str) -> str:
        """Prometheus lines: tail calls and the histogram of rows per call."""
        m = f'model="{model}"'
        lines = [
            "# HELP ponder_serve_tail_calls_total Calls of the tail model (a batch is one).",
            "# TYPE ponder_serve_tail_calls_total counter",
            f"ponder_serve_tail_calls_total{{{m}}} {self.calls}",
            "# HELP ponder_serve_batch_rows Rows (samples) per tail call.",
            "# TYPE ponder_serve_batch_rows histogram",
            *(f'ponder_serve_batch_rows_bucket{{{m},le="{b}"}} {n}'
              for b, n in zip(self.BUCKETS, self.histogram, strict=True)),
            f'ponder_serve_batch_rows_bucket{{{m},le="+Inf"}} {self.calls}',
            f"ponder_serve_batch_rows_sum{{{m}}} {self.rows}",
            f"ponder_serve_batch_rows_count{{{m}}} {self.calls}",
        ]  # fmt: skip
        return "\n".join(lines) + "\n"


class BatchedSplit(SplitBundle):
    """A `SplitBundle` whose tail calls (from `receive` and `run_tail`) go through a
    `TailBatcher` once `batched` has set one up."""

    batcher: TailBatcher | None = None

    def batched(self, **options: Any) -> TailBatcher:
        """Route the tail through a new `TailBatcher(**options)` and return it."""
        self.batcher = TailBatcher(lambda t, m: SplitBundle.run_tail(self, t, m), **options)
        return self.batcher

    def run_tail(self, tokens: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        if self.batcher is None:
            return super().run_tail(tokens, mask)
        return self.batcher(tokens, mask)
