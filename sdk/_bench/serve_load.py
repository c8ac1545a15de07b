"""The load parts of `ponder bench serve`: throughput and latency at a number of concurrent
clients (OffloadClient threads, binary or JSON), with the server's CPU time per request; and
load runs through `Offloader` (cloud, or the local model when offloading fails) in which every
answer is checked against the same request run in this process, optionally while the server
is killed and restarted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ponder._bench.serve_process import ServeProcess
from ponder.runtime import Engine, OffloadClient, Offloader, OffloadError, SplitBundle

__all__ = [
    "Devices",
    "References",
    "counts",
    "fault_run",
    "load_run",
    "request_inputs",
    "throughput_run",
]

MODEL = "digits-vit"  # the model id the bench exports the bundle under
TAIL_CALLS = "ponder_serve_tail_calls_total"


def throughput_run(
    server: ServeProcess,
    payloads: Sequence[list[bytes]],
    params: dict[str, Any],
    *,
    clients: int,
    requests: int,
    binary: bool,
    token: str,
    limit_s: float,
) -> dict[str, Any]:
    """`clients` threads, each sending `requests` requests (one image's payload each) as fast
    as answers come, or until `limit_s`: throughput, latency percentiles, errors, the server's
    CPU time per request, and requests per tail call (server-side batching)."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(c: int) -> None:
        conn = OffloadClient(server.url, MODEL, token=token, timeout_s=10, binary=binary)
        try:
            start.wait(timeout=60)
            for i in range(requests):
                if time.monotonic() > deadline[0]:
                    return
                t0 = time.perf_counter()
                try:
                    conn.infer_payloads(payloads[(c * requests + i) % len(payloads)], params)
                except OffloadError as e:
                    with lock:
                        errors.append(e.kind)
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t0)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    calls0, cpu0 = _tail_calls(server), server.cpu_seconds()
    deadline[0] = time.monotonic() + limit_s
    start.wait(timeout=60)
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout=limit_s + 60)
    seconds = time.perf_counter() - t0
    cpu, calls = server.cpu_seconds() - cpu0, _tail_calls(server) - calls0
    done = len(latencies)
    ms = np.asarray(latencies) * 1e3
    return {
        "codec_mode": "binary" if binary else "json", "clients": clients, "requests": done,
        "errors": len(errors), "seconds": seconds, "throughput_rps": done / seconds,
        "p50_ms": float(np.percentile(ms, 50)) if done else None,
        "p99_ms": float(np.percentile(ms, 99)) if done else None,
        "server_cpu_ms_per_request": 1e3 * cpu / done if done else None,
        "requests_per_tail_call": done / calls if calls else None,
    }  # fmt: skip


@dataclass
class References:
    """What each request must be answered with, computed in this process one image at a time
    (as the clients send them): the split run through real payloads per (keep, codec) for a
    cloud answer, the local bundle for a fallback."""

    cloud: dict[tuple[float, str], np.ndarray]  # [N, C] logits
    local: np.ndarray  # [N] predictions

    @classmethod
    def compute(cls, bundle: Path, x: np.ndarray, keeps, codecs) -> References:
        split = SplitBundle.load(bundle)
        cloud = {
            (k, c): np.concatenate([split.run({"x": x[i : i + 1]}, k, c) for i in range(len(x))])
            for k in keeps
            for c in codecs
        }
        engine = Engine.load(bundle / split.manifest["local"]["folder"], "onnxruntime")
        local = np.concatenate([engine.run(x[i : i + 1]).prediction for i in range(len(x))])
        return cls(cloud, local)


class Devices:
    """`clients` device threads, each with its own `Offloader` to `url` (loaded once, reused
    across runs), answering images in turn with keep and codec in turn over `combos`; each
    answer is checked against `refs`."""

    def __init__(
        self,
        bundle: Path,
        url: str,
        x: np.ndarray,
        refs: References,
        combos: Sequence[tuple[float, str]],
        *,
        clients: int,
        token: str,
        timeout_s: float = 2.0,
    ):
        self.x, self.refs, self.combos = x, refs, list(combos)
        self.devices = [
            Offloader(bundle, url, token=token, timeout_s=timeout_s) for _ in range(clients)
        ]

    def close(self) -> None:
        for device in self.devices:
            device.close()

    def run(self, stop: threading.Event, limit_s: float = 600.0) -> list[dict[str, Any]]:
        """Every device sends requests one after another until `stop` is set (or `limit_s`):
        one record per request with its times, source, and whether its answer was right."""
        records: list[dict[str, Any]] = []
        lock = threading.Lock()
        deadline = time.monotonic() + limit_s
        clients, x = len(self.devices), self.x

        def client(c: int) -> None:
            n = 0
            while not stop.is_set() and time.monotonic() < deadline:
                i = (c + n * clients) % len(x)
                keep, codec = self.combos[(c + n) % len(self.combos)]
                n += 1
                record = {"start": time.monotonic(), "keep": keep, "codec": codec}
                try:
                    got = self.devices[c].run({"x": x[i : i + 1]}, keep=keep, codec=codec)
                except Exception as e:  # a lost request: what this count is for
                    record.update(source="lost", error=f"{type(e).__name__}: {e}", right=False)
                else:
                    record.update(_check(got, self.refs, i, keep, codec))
                record["end"] = time.monotonic()
                with lock:
                    records.append(record)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=limit_s + 60)
        stop.set()
        return records


def _check(got: Any, refs: References, i: int, keep: float, codec: str) -> dict[str, Any]:
    if got.source == "cloud":
        want = refs.cloud[keep, codec][i]
        error = float(np.abs(got.logits[0] - want).max())
        right = int(got.prediction[0]) == int(want.argmax())
        return {"source": "cloud", "right": right, "logit_error": error, "error": None}
    right = int(got.prediction[0]) == int(refs.local[i])
    return {"source": got.source, "right": right, "error": got.error}


def request_inputs(payloads: list[bytes]) -> dict[str, np.ndarray]:
    """The inputs of one offload request, as `OffloadClient.infer_payloads` sends them."""
    return {
        "payload": np.frombuffer(b"".join(payloads), np.uint8),
        "payload_sizes": np.array([len(p) for p in payloads], np.int64),
    }


def _tail_calls(server: ServeProcess) -> float:
    return sum(v for k, v in server.metrics().items() if k.startswith(TAIL_CALLS))


def load_run(run: Callable[[threading.Event], list], seconds: float) -> dict[str, Any]:
    """`run(stop)` for `seconds`: the counts of its records."""
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        records = run(stop)
    finally:
        timer.cancel()
    return {"seconds": seconds, **counts(records)}


def fault_run(
    run: Callable[[threading.Event], list],
    server: ServeProcess,
    *,
    kill_after_s: float,
    outage_s: float,
    after_s: float,
) -> dict[str, Any]:
    """`run(stop)` while the server is killed (SIGKILL) after `kill_after_s`, started again on
    the same port `outage_s` later, and left serving `after_s` more: the counts before the
    kill, during the outage (kill to ready) and after the restart."""
    stop, times = threading.Event(), {}

    def fault() -> None:
        if stop.wait(kill_after_s):
            return
        times["kill"] = time.monotonic()
        server.kill()
        if stop.wait(outage_s):
            return
        server.start()  # returns once it answers again
        times["ready"] = time.monotonic()
        stop.wait(after_s)
        stop.set()

    controller = threading.Thread(target=fault)
    controller.start()
    try:
        records = run(stop)
    finally:
        stop.set()
        controller.join(timeout=180)
    kill, ready = times.get("kill", float("inf")), times.get("ready", float("inf"))
    phases = {
        "before_kill": [r for r in records if r["end"] < kill],
        "outage": [r for r in records if r["end"] >= kill and r["start"] < ready],
        "after_restart": [r for r in records if r["start"] >= ready],
    }
    return {
        **counts(records),
        "restart_seconds": ready - kill if "ready" in times else None,
        "phases": {name: counts(rs) for name, rs in phases.items()},
        "resumed": counts(phases["after_restart"])["cloud"] > 0,
    }


def counts(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests, where their answers came from, lost and wrong ones, latency percentiles."""
    sources = [r["source"] for r in records]
    errors = [r["logit_error"] for r in records if "logit_error" in r]
    ms = [1e3 * (r["end"] - r["start"]) for r in records]
    return {
        "requests": len(records),
        **{s: sources.count(s) for s in ("cloud", "fallback", "local", "lost")},
        "wrong": sum(1 for r in records if r["source"] != "lost" and not r["right"]),
        "max_logit_error": max(errors, default=None),
        "p50_ms": float(np.percentile(ms, 50)) if ms else None,
        "p99_ms": float(np.percentile(ms, 99)) if ms else None,
        "errors": sorted({r["error"].split(":")[0] for r in records if r.get("error")}),
    }
