"""`ponder bench export`: a ViT-S/16-sized encoder with early exits, exported as a staged bundle
(one method per stage) and as one monolithic method, timed on ExecuTorch (XNNPACK) and ONNX
Runtime at batch 1: does reaching stage s cost its FLOPs fraction, and all stages the whole?"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ponder._bench.export_int8 import int8_bundle
from ponder._bench.export_report import add_goals, echo_tables, write_outputs
from ponder._bench.export_time import PROVIDER_CHAINS, runtime_threads, summarise, time_bundles
from ponder._bench.timing import machine
from ponder._bench.vit import vit_sequential
from ponder._convert.convert import convert_
from ponder._early_exit.config import EarlyExitConfig
from ponder.runtime._bundle.layout import MANIFEST, ONNX_DIR, PTE

__all__ = ["run_bench_export"]

# Three early exits after transformer blocks 3, 6 and 9 of 12, and the model's own head: four
# stages at about 1/4, 1/2, 3/4 and all of the FLOPs. (Sequential child 0 is the patch
# embedding, so transformer block j is child j, and that is the index EarlyExitConfig takes.)
DEFAULT_EXITS = (3, 6, 9)
INT8_NOTE = (
    "staged bundle only, int8 against fp32 per stage; calibrated on random images, so "
    "only the latency means anything"
)


def run_bench_export(
    out: str | Path = "ponder-bench/export",
    *,
    blocks: int = 12,
    width: int = 384,
    heads: int = 6,
    image: int = 224,
    patch: int = 16,
    classes: int = 1000,
    exits: tuple[int, ...] = DEFAULT_EXITS,
    threads: int | None = None,
    repeats: int = 40,
    warmup: int = 5,
    int8: bool = True,
    reuse: bool = False,
    provider: str = "cpu",
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export (or, with `reuse`, load) the bundles under `out`, time them, write export.json
    and export.png there, print the tables, and return the results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = threads or os.cpu_count() or 1
    sizes = {
        "blocks": blocks,
        "width": width,
        "heads": heads,
        "image": image,
        "patch": patch,
        "classes": classes,
    }
    config = {
        "model": "ViT-S/16-sized encoder (random weights)"
        if (blocks, width) == (12, 384)
        else "ViT-style encoder (random weights)",
        **sizes,
        "tokens": (image // patch) ** 2 + 1,
        "exit_after_blocks": list(exits),
        "style": "sdn",
        "pooling": "cls",
        "batch": 1,
        "repeats": repeats,
        "warmup": warmup,
    }
    plain = vit_sequential(**sizes)
    staged = convert_(
        vit_sequential(**sizes), EarlyExitConfig(exits=tuple(exits), style="sdn", pooling="cls")
    )
    bundles = _export_all(staged, plain, out, config, int8, reuse, echo)
    x = torch.randn(1, 3, image, image, generator=torch.Generator().manual_seed(1))
    echo(
        f"timing at batch 1: {repeats} interleaved rounds of {2 * len(bundles)} variants "
        f"after {warmup} warm-up"
    )
    with runtime_threads(threads) as counts:
        timed = time_bundles(
            bundles, x, threads=threads, repeats=repeats, warmup=warmup, provider=provider
        )
    results = _results(config, counts, bundles, timed, staged, plain, int8, provider)
    echo_tables(results, echo)
    json_path, png_path = write_outputs(out, results)
    echo(f"wrote {json_path} and {png_path}")
    return results


def _results(
    config, counts, bundles, timed, staged, plain, int8: bool, provider: str
) -> dict[str, Any]:
    chain = ", ".join(PROVIDER_CHAINS[provider])
    io = "; stage outputs kept on the GPU (IOBinding)" if provider != "cpu" else ""
    info = {
        **machine(),
        "backend": "ExecuTorch runtime (XNNPACK delegate); ONNX Runtime "
        f"({chain}{io}, intra-op spinning off)",
        "threads": counts,
    }
    flops = _flops(
        {k: json.loads((bundles[k] / MANIFEST).read_text()) for k in ("staged", "monolithic")}
    )
    timing = summarise(timed, flops["cumulative"], flops["mono"])
    add_goals(timing)
    return {
        "config": config,
        "machine": info,
        "flops": flops,
        "timing": timing,
        "sizes": _sizes(bundles, staged, plain),
        "int8": {"measured": True, "note": INT8_NOTE}
        if "staged_int8" in bundles
        else {"measured": False, "note": "not measured (--no-int8)"},
        "raw_ms": {b: {k: (1e3 * v).tolist() for k, v in t.items()} for b, t in timed.items()},
    }


def _export_all(staged, plain, out: Path, config, int8: bool, reuse: bool, echo):
    """Bundle folders by variant: "staged", "monolithic" and, if asked and available,
    "staged_int8"."""
    image = config["image"]
    samples = torch.randn(2, 3, image, image, generator=torch.Generator().manual_seed(0))
    bundles = {
        name: _bundle(model, samples, out / name, config, reuse, echo)
        for name, model in (("staged", staged), ("monolithic", plain))
    }
    if int8:
        bundles["staged_int8"] = int8_bundle(
            staged,
            bundles["staged"],
            out / "staged_int8",
            config_key(config),
            image=image,
            reuse=reuse,
            echo=echo,
        )
    return bundles


def _bundle(model, samples, folder: Path, config, reuse: bool, echo) -> Path:
    """Export `model` into `folder` (target "all"), unless `reuse` and a bundle written with
    the same benchmark config is already there."""
    from ponder.export import export_bundle

    manifest = folder / MANIFEST
    if reuse and manifest.exists():
        written = json.loads(manifest.read_text())["config"].get("bench_export")
        if written == config_key(config):
            echo(f"reusing {folder}")
            return folder
    echo(f"exporting {folder.name} bundle to {folder} (ExecuTorch lowering takes a while)")
    started = time.perf_counter()
    with warnings.catch_warnings():
        # pytree deprecation inside torch/executorch, once per pickled spec; not ours to fix
        warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
        export_bundle(
            model,
            samples,
            folder,
            target="all",
            model_id=f"bench-export-{folder.name}",
            config={"bench_export": config_key(config)},
            echo=echo,
        )
    echo(f"  {folder.name}: done in {time.perf_counter() - started:.0f} s")
    return folder


def config_key(config: dict[str, Any]) -> dict[str, Any]:
    """The part of the config that decides the exported files (not the timing settings)."""
    return {k: v for k, v in config.items() if k not in ("repeats", "warmup")}


def _flops(manifests: dict[str, Any]) -> dict[str, Any]:
    staged = manifests["staged"]["stages"][-1]["cumulative_flops"]
    mono = manifests["monolithic"]["stages"][-1]["cumulative_flops"]
    return {
        "staged": staged,
        "mono": mono,
        "heads_share": (staged - mono) / staged,
        "per_stage": [s["flops"] for s in manifests["staged"]["stages"]],
        "cumulative": [s["cumulative_flops"] for s in manifests["staged"]["stages"]],
    }


def _sizes(bundles: dict[str, Path], staged_model, plain) -> dict[str, Any]:
    """model.pte and the ONNX files (summed) against one copy of each model's fp32 weights."""
    sizes, models = {}, {"staged": staged_model, "monolithic": plain, "staged_int8": staged_model}
    for name in bundles:
        model = models[name]
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        pte = (bundles[name] / PTE).stat().st_size
        onnx = sum(f.stat().st_size for f in (bundles[name] / ONNX_DIR).glob("*.onnx"))
        sizes[name] = {
            "weights_bytes": weights,
            "pte_bytes": pte,
            "pte_ratio": pte / weights,
            "onnx_bytes": onnx,
            "onnx_ratio": onnx / weights,
        }
    return sizes
