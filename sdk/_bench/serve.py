"""`ponder bench serve`: the offload service on loopback with a real model (the digits ViT,
trained here, split after a block and exported as a split bundle). Measured: throughput and
p50/p99 latency at rising concurrency with binary and with JSON requests, the server's CPU time
per request, payload and request bytes per codec and keep level; then a load test through
`Offloader` (every answer checked: lost and wrong must be 0), a fault test (the server killed
and restarted mid-run: every request answered, offloading resumes) and a fuzz test (malformed
requests: every one a 4xx, the server still serving).

Reusable by other benches: `ServeProcess` (a `ponder serve` subprocess on a free loopback
port, stopped or killed by its pid) and `digits_split_bundle` (the bundle and its test
images); the link shaper is `ponder._bench.shaper.LinkShaper`.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ponder._bench.serve_fuzz import fuzz
from ponder._bench.serve_links import LINKS, link_sweep
from ponder._bench.serve_load import (
    MODEL,
    Devices,
    References,
    fault_run,
    load_run,
    request_inputs,
    throughput_run,
)
from ponder._bench.serve_process import ServeProcess, free_port
from ponder._bench.serve_report import echo_report, payload_sizes, summarize, write_report
from ponder._core.errors import BundleError

__all__ = [
    "FULL",
    "QUICK",
    "ServeBenchSize",
    "ServeProcess",
    "ServedSplit",
    "digits_split_bundle",
    "free_port",
    "run_bench_serve",
]

BLOCK = 1  # split after the 2nd of the digits ViT's 6 blocks
KEEPS = [1.0, 0.5, 0.25]
CODECS = ["fp32", "int8", "int4-g32"]
THROUGHPUT_POINT = (0.5, "int8")  # keep and codec of the throughput requests
INFO_FILE, IMAGES_FILE = "bench.json", "test-images.npz"  # beside the bundle, for reuse
MAX_BODY_MB = 0.25  # the servers' body cap: the largest request here (JSON, fp32) is ~15 KB


@dataclass(frozen=True)
class ServeBenchSize:
    """How much to run: throughput at each of `concurrency` client threads, `requests` each,
    `repeats` times (binary and JSON interleaved), each run at most `limit_s`; the load test
    with `clients` devices for `seconds`; the fault test killing the server after
    `kill_after_s`, restarting it `outage_s` later and running `after_s` more; `fuzz`
    malformed requests; `images` test images in turn; `epochs` to train (None: recipe)."""

    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    requests: int = 50
    repeats: int = 3
    limit_s: float = 60.0
    clients: int = 8
    seconds: float = 10.0
    kill_after_s: float = 3.0
    outage_s: float = 1.0
    after_s: float = 3.0
    fuzz: int = 300
    images: int = 128
    epochs: int | None = None
    links: tuple[tuple[float, float], ...] = LINKS
    link_requests: int = 30


FULL = ServeBenchSize()
# for tests: every part runs, with tiny counts; 10 epochs give ~85% test accuracy
QUICK = ServeBenchSize(
    concurrency=(1, 4), requests=4, repeats=1, limit_s=30.0, clients=3, seconds=1.5,
    kill_after_s=0.5, outage_s=0.5, after_s=1.5, fuzz=51, images=12, epochs=10,
    links=((10, 5), (1, 100)), link_requests=4,
)  # fmt: skip


@dataclass
class ServedSplit:
    """A split bundle of the digits ViT and the labelled test images it is measured on."""

    bundle: Path
    x: np.ndarray  # [N, 1, 8, 8]
    y: np.ndarray  # [N]
    info: dict[str, Any]


def digits_split_bundle(
    folder: str | Path,
    *,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = False,
    echo: Callable[[str], None] = print,
) -> ServedSplit:
    """The digits ViT trained by its recipe (`epochs` overrides), split after block `BLOCK`
    with keep levels `KEEPS` and codecs `CODECS`, exported (ONNX, with local/) into
    `folder`/bundle; its test images beside it. Reused when `folder` holds one made with the
    same settings."""
    folder = Path(folder)
    config = {"epochs": epochs, "seed": seed, "block": BLOCK, "keeps": KEEPS, "codecs": CODECS,
              "offload_points": "calibration"}  # fmt: skip
    reused = _reuse(folder, config)
    if reused is not None:
        echo(f"reusing the split bundle in {reused.bundle}")
        return reused
    import torch

    from ponder._bench.exits_models import bench_model
    from ponder._convert.convert import convert_
    from ponder._split.config import SplitConfig
    from ponder.export import export_split

    bench = bench_model("digits-vit", epochs=epochs)
    echo(f"training the digits ViT ({bench.config['recipe']['epochs']} epochs) and exporting "
         f"its split bundle to {folder / 'bundle'}")  # fmt: skip
    prepared = bench.prepare(seed, progress)
    base, test, calib = prepared.base.eval(), prepared.splits.test, prepared.splits.calib
    with torch.no_grad():
        accuracy = float((base(test.x).argmax(-1) == test.y).float().mean())
    echo(f"{bench.description}: test accuracy {accuracy:.2%} ({len(test.y)} images)")
    model = convert_(copy.deepcopy(base), SplitConfig(block=BLOCK, keep=0.5, codec="int8"))
    export_split(
        model, test.x[:8], folder / "bundle", target="onnx", keeps=KEEPS, codecs=CODECS,
        model_id=MODEL, evaluation=({"x": calib.x}, calib.y),
        echo=(lambda line: echo("  " + line)) if progress else lambda _: None,
    )  # fmt: skip
    info = {
        "config": config, "model": bench.description, "test_accuracy": accuracy,
        "train_seconds": prepared.stats.get("seconds"),
    }  # fmt: skip
    np.savez(folder / IMAGES_FILE, x=test.x.numpy(), y=test.y.numpy())
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return ServedSplit(folder / "bundle", test.x.numpy(), test.y.numpy(), info)


def _reuse(folder: Path, config: dict[str, Any]) -> ServedSplit | None:
    """The bundle and images in `folder` when made with `config` and intact, else None."""
    from ponder.runtime import SplitBundle

    saved, data = folder / INFO_FILE, folder / IMAGES_FILE
    if not (saved.is_file() and data.is_file()):
        return None
    info = json.loads(saved.read_text())
    if info.get("config") != config:
        return None
    try:
        SplitBundle.load(folder / "bundle")  # every file there, matching its sha256
    except BundleError:
        return None
    with np.load(data) as images:
        return ServedSplit(folder / "bundle", images["x"], images["y"], info)


def run_bench_serve(
    out: str | Path = "ponder-bench/serve",
    *,
    quick: bool = False,
    size: ServeBenchSize | None = None,
    seed: int = 0,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark (`size`, default `QUICK` or `FULL`); print markdown tables; write
    serve.json and serve.md in `out`."""
    from ponder.runtime import SplitBundle

    size = size or (QUICK if quick else FULL)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    served = digits_split_bundle(out / "model", epochs=size.epochs, seed=seed,
                                 progress=progress, echo=echo)  # fmt: skip
    split = SplitBundle.load(served.bundle)
    x, y = served.x[: size.images], served.y[: size.images]
    if progress:
        echo(f"in-process answers of {len(x)} images, every keep and codec, one at a time")
    refs = References.compute(served.bundle, x, KEEPS, CODECS)
    token = secrets.token_urlsafe(16)
    most = max(32, *size.concurrency, size.clients)
    options = ("--max-concurrency", str(most), "--max-body-mb", str(MAX_BODY_MB))
    with ServeProcess(served.bundle, token=token, options=options) as server:
        startup_s = server.startup_s
        throughput = _throughput(server, split, x, size, token, progress, echo)
        load, fault = _load_and_fault(server, served.bundle, x, refs, size, token, progress,
                                      echo)  # fmt: skip
        keep, codec = THROUGHPUT_POINT
        good = request_inputs(split.send({"x": x[:1]}, keep, codec))
        fuzzed = fuzz(server, MODEL, good, split.params(keep, codec), split.split["width"],
                      count=size.fuzz, max_body_bytes=int(MAX_BODY_MB * (1 << 20)), seed=seed)  # fmt: skip
        fuzzed["server_alive"] = server.proc.poll() is None
        if progress:
            echo(f"link sweep: {len(size.links)} shaped links x always local, always offloaded, "
                 "policy")  # fmt: skip
        links = link_sweep(served.bundle, server.port, x, y, links=size.links,
                           requests=size.link_requests, token=token, progress=progress,
                           echo=echo)  # fmt: skip
    results = {
        "config": {**asdict(size), "quick": quick, "seed": seed, "block": BLOCK,
                   "keeps": KEEPS, "codecs": CODECS, "throughput_point": THROUGHPUT_POINT,
                   "server_options": list(options)},
        "machine": _machine(),
        "model": {**served.info, "images": len(x)},
        "server_startup_s": startup_s,
        "payload": payload_sizes(split, x, y, refs, KEEPS, CODECS),
        "throughput": throughput,
        "load": load,
        "fault": fault,
        "fuzz": fuzzed,
        "links": links,
    }  # fmt: skip
    echo_report(results, echo)
    write_report(out, results)
    echo(f"wrote {out / 'serve.json'} and {out / 'serve.md'}")
    return results


def _load_and_fault(server, bundle, x, refs, size, token, progress, echo) -> tuple[dict, dict]:
    """The load test, then the fault test, with the same devices (keep and codec in turn)."""
    combos = [(k, c) for k in KEEPS for c in CODECS]
    devices = Devices(bundle, server.url, x, refs, combos, clients=size.clients, token=token)
    try:
        if progress:
            echo(f"load: {size.clients} devices for {size.seconds:g} s")
        load = load_run(devices.run, size.seconds)
        if progress:
            echo(f"fault: the server killed after {size.kill_after_s:g} s and restarted")
        fault = fault_run(devices.run, server, kill_after_s=size.kill_after_s,
                          outage_s=size.outage_s, after_s=size.after_s)  # fmt: skip
    finally:
        devices.close()
    return load, fault


def _throughput(server, split, x, size, token, progress, echo) -> dict[str, Any]:
    """Every concurrency with binary and JSON requests, the two interleaved (their order
    alternating) in each of `size.repeats` rounds; each row's spread over the rounds."""
    keep, codec = THROUGHPUT_POINT
    payloads = [split.send({"x": x[i : i + 1]}, keep, codec) for i in range(len(x))]
    params = split.params(keep, codec)
    for binary in (True, False):  # warm-up, not counted: connections, server threads, caches
        throughput_run(server, payloads, params, clients=max(size.concurrency), requests=3,
                       binary=binary, token=token, limit_s=size.limit_s)  # fmt: skip
    runs = []
    for r in range(size.repeats):
        for clients in size.concurrency:
            for binary in (True, False) if (r + clients) % 2 == 0 else (False, True):
                if progress:
                    mode = "binary" if binary else "JSON"
                    echo(f"  round {r + 1}/{size.repeats}: {clients} clients, {mode}")
                row = throughput_run(
                    server, payloads, params, clients=clients,
                    requests=size.requests, binary=binary, token=token, limit_s=size.limit_s,
                )  # fmt: skip
                runs.append({"repeat": r, **row})
    return {"runs": runs, "summary": summarize(runs)}


def _machine() -> dict[str, Any]:
    import onnxruntime

    from ponder._bench.timing import machine

    return {
        **machine(),
        "backend": "ponder serve (Starlette + uvicorn, 1 worker); tail on ONNX Runtime "
        f"{onnxruntime.__version__} CPU, default threads",
        "clients": "threads in the bench process (OffloadClient on http.client)",
        "clock_tick_ms": 1e3 / os.sysconf("SC_CLK_TCK"),  # resolution of /proc CPU times
    }
