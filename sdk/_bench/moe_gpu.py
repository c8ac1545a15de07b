"""One D2DMoE FFN layer on a CUDA GPU: dense FFN, masked reference and Triton kernel (both
merges), fp16 and fp32, time fraction against FLOPs fraction; then whole encoders, dense
against D2DMoE on the kernel (sdk/_bench/moe_gpu_encoder.py); runs the `gpu` tests first.

From the root of a checkout, with nothing installed but torch (and triton, for the kernel):

    PYTHONUNBUFFERED=1 python3 sdk/_bench/moe_gpu.py --out $OUT

or, where ponder is installed, `python -m ponder._bench.moe_gpu --out DIR`. Expected: about
2-3 minutes on an H200, kernel compiles included; --budget-s (default 270 s) cuts the tile sweep,
then the grid, short and still writes moe_gpu.json, moe_gpu.md and gpu_tests.log to --out.
`--smoke` runs tiny sizes in seconds (on the CPU too, Triton under TRITON_INTERPRET=1).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]  # the checkout (this file is sdk/_bench/moe_gpu.py)
FULL = {
    "ffns": {"minilm": (384, 1536), "vit_b": (768, 3072)},  # name -> (width D, hidden)
    "tokens": (128, 2048, 16384),
    "fractions": (0.1, 0.25, 0.5, 1.0),  # share of the experts each token runs
    "dtypes": {"fp16": torch.float16, "fp32": torch.float32},
    "sweep_tokens": (2048, 16384),
}
FULL["encoder_fractions"] = (0.1, 0.25, 0.5)  # end to end, fp16
SMOKE = {**FULL, "ffns": {"tiny": (32, 256)}, "tokens": (16, 40), "sweep_tokens": (40,)}
NOTE = (
    "medians of CUDA-event timings, variants interleaved after a warm-up (spread: the widest "
    "interquartile range of a cell's variants over its median); reference, triton and "
    "atomic are time fractions of the dense FFN, the graph columns of the dense FFN as a CUDA "
    "graph; FLOPs = selected (token, expert) pairs / all pairs (random routing, router not "
    "counted); issue 15's goal: triton/FLOPs <= 1.2 from 25% FLOPs up at 2,048+ tokens"
)


def _bootstrap() -> None:
    """Make `ponder` importable from a bare checkout. pyproject.toml maps the package's folders
    (ponder -> sdk/, ponder.kernels -> kernels/, ...); without an install, `ponder` is loaded
    from sdk/ with the checkout's root as a second place to find its subpackages."""
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]  # this folder's modules must not shadow top-level names
    if importlib.util.find_spec("ponder") is not None:
        return
    spec = importlib.util.spec_from_file_location(
        "ponder",
        ROOT / "sdk" / "__init__.py",
        submodule_search_locations=[str(ROOT / "sdk"), str(ROOT)],
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["ponder"] = module
    spec.loader.exec_module(module)


def versions() -> dict[str, object]:
    """What the figures were measured with, printed and written beside them."""
    info: dict[str, object] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "triton": None,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError as e:
        info["triton_missing"] = str(e)
    try:  # the GPU runtime tests need onnxruntime-gpu's providers; say what this machine has
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError as e:
        info["onnxruntime_missing"] = str(e)
    info["pynvml"] = importlib.util.find_spec("pynvml") is not None
    try:
        smi = ["nvidia-smi", "--query-gpu=name,driver_version,power.draw", "--format=csv,noheader"]
        info["nvidia_smi"] = subprocess.run(smi, capture_output=True, text=True).stdout.strip()
    except OSError as e:
        info["nvidia_smi"] = f"not run: {e}"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, sms=props.multi_processor_count, gib=props.total_memory / 2**30)
    return info


def run_gpu_tests(out: Path) -> dict[str, object]:
    """`pytest -m gpu` on the kernel and runtime tests in a child process (this file, so the
    same bootstrap): the Triton kernel natively, NVML against nvidia-smi, and ONNX Runtime on
    CUDA/TensorRT and eager torch on CUDA where this machine has what they need (each test
    says why it skipped)."""
    tests = [ROOT / "tests" / "kernels", ROOT / "tests" / "runtime"]
    if not tests[0].is_dir():
        return {"ran": False, "why": f"{tests[0]} not found: run from a checkout"}
    start = time.perf_counter()
    pytest_args = ["-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider", *map(str, tests)]
    child = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--pytest", *pytest_args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    log = child.stdout + child.stderr
    (out / "gpu_tests.log").write_text(log)
    last = log.strip().splitlines()[-1] if log.strip() else ""
    took = time.perf_counter() - start
    return {"ran": True, "exit_code": child.returncode, "summary": last, "seconds": took}


def write_report(out: Path, result: dict) -> None:
    """moe_gpu.json (everything) and moe_gpu.md (the tables)."""
    from ponder._bench.moe_gpu_cells import fractions, summary
    from ponder._core.report import write_json

    write_json(out / "moe_gpu.json", result)
    lines = ["# One D2DMoE layer on the GPU: time fraction against FLOPs fraction", ""]
    lines += [f"- {k}: {v}" for k, v in result["versions"].items()]
    lines += [f"- gpu tests: {result['tests']}", f"- {NOTE}", ""]
    head = (
        "| FFN | dtype | T | E | experts/token | FLOPs | dense ms | reference | triton | atomic "
        "| triton/FLOPs | graph: dense ms | graph: triton | triton max err | spread |"
    )
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    nan = float("nan")
    for row in result["cells"]:
        f, ms = fractions(row), row["ms"]
        cells = [row["ffn"], row["dtype"], row["T"], row["E"], row["experts_per_token"]]
        cells += [row["flops_fraction"], ms["dense"]["median"]]
        cells += [f.get(k, nan) for k in ("reference", "triton", "triton_atomic")]
        cells += [f.get("triton", nan) / row["flops_fraction"]]
        cells += [ms.get("dense_graph", {}).get("median", nan), f.get("triton_graph", nan)]
        cells += [row.get("triton_max_err", nan), _spread(row)]
        text = (f"{c:.3g}" if isinstance(c, float) else str(c) for c in cells)
        lines.append("| " + " | ".join(text) + " |")
    lines += ["", "End to end (whole encoder, random weights; router counted):", ""]
    head = "| encoder | dtype | tokens | experts/token | FLOPs | dense ms | D2DMoE ms | speed-up "
    head += "| spread |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for row in result.get("end_to_end", []):
        ms = row["ms"]
        cells = [row["encoder"], row["dtype"], row["tokens"]]
        cells += [f"{row['experts_per_token']}/{row['E']}"]
        cells += [row["flops_fraction"], ms["dense"]["median"], ms["moe"]["median"]]
        cells += [row["speedup"], _spread(row)]
        text = (f"{c:.3g}" if isinstance(c, float) else str(c) for c in cells)
        lines.append("| " + " | ".join(text) + " |")
    lines += ["", "Tile sweep (fp16, 25% of the experts; MAX_BLOCK in kernels/_triton.py):", ""]
    for row in result["sweep"]:
        tiles = f"M={row['max_block']['M']} D={row['max_block']['D']}"
        lines.append(f"- {row['ffn']} {tiles} T={row['T']}: {summary(row)}")
    if result["stopped_early"]:
        lines += ["", "Stopped early at --budget-s: the grid above is incomplete."]
    (out / "moe_gpu.md").write_text("\n".join(lines) + "\n")


def _spread(row: dict) -> float:
    """The widest interquartile range of a cell's variants, relative to that variant's median."""
    return max((s["p75"] - s["p25"]) / s["median"] for s in row["ms"].values())


def measure(result: dict, sizes: dict, args, triton: bool, device: str, deadline: float) -> None:
    """The grid (every FFN, dtype, token count and fraction), then the tile sweep, into result."""
    from ponder._bench.moe_gpu_cells import layer, measure_cell, summary, tile_sweep

    for ffn, (D, hidden) in sizes["ffns"].items():
        for dtype_name, dtype in sizes["dtypes"].items():
            w = layer(D, hidden, args.expert_size, dtype, device)
            for T in sizes["tokens"]:
                for fraction in sizes["fractions"]:
                    if time.perf_counter() > deadline:
                        result["stopped_early"] = True
                        return
                    row = measure_cell(w, T, fraction, args.rounds, triton=triton)
                    result["cells"].append({"ffn": ffn, "dtype": dtype_name, **row})
                    k = f"{row['experts_per_token']}/{row['E']}"
                    print(f"{ffn} {dtype_name} T={T} k={k}: {summary(row)}", flush=True)
            write_report(args.out, result)
    if triton:
        measure_encoders(result, args, device, deadline, smoke=sizes is SMOKE)
    for ffn, (D, hidden) in sizes["ffns"].items() if triton and not args.no_sweep else ():
        w = layer(D, hidden, args.expert_size, torch.float16, device)
        rows = tile_sweep(w, sizes["sweep_tokens"], args.rounds, deadline)
        result["sweep"] += [{"ffn": ffn, **row} for row in rows]


def measure_encoders(result: dict, args, device: str, deadline: float, smoke: bool) -> None:
    """Whole encoders, dense FFNs against D2DMoE layers on the Triton kernel (fp16)."""
    from ponder._bench.moe_gpu_encoder import ENCODERS, SMOKE_ENCODERS, encoder_cell

    dtype = torch.float16 if device == "cuda" else torch.float32
    for name, sizes in (SMOKE_ENCODERS if smoke else ENCODERS).items():
        for fraction in FULL["encoder_fractions"]:
            if time.perf_counter() > deadline:
                result["stopped_early"] = True
                return
            row = encoder_cell(name, sizes, fraction, args.expert_size, dtype, device, args.rounds)
            result["end_to_end"].append(row)
            print(
                f"{name} ({row['tokens']} tokens) FFN experts {fraction:.0%}: dense "
                f"{row['ms']['dense']['median']:.3f} ms, D2DMoE {row['ms']['moe']['median']:.3f} "
                f"ms, {row['speedup']:.2f}x at {row['flops_fraction']:.2f} of the FLOPs",
                flush=True,
            )
    write_report(args.out, result)


def run(args) -> int:
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    info = versions()
    print("versions:", info, flush=True)
    device = "cuda" if info["cuda_available"] else "cpu"
    if device == "cpu" and not args.smoke:
        print("no CUDA device (torch.cuda.is_available() is False): nothing to measure")
        return 2
    result = {"versions": info, "tests": None, "cells": [], "end_to_end": [], "sweep": []}
    result["stopped_early"] = False
    result["tests"] = (
        {"ran": False, "why": "--no-tests"} if args.no_tests else run_gpu_tests(args.out)
    )
    print("gpu tests:", result["tests"], flush=True)
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    triton = info["triton"] is not None and (device == "cuda" or interpreting)
    if not triton:
        print("triton cannot run here (see versions): timing dense FFN and reference only")
    with torch.inference_mode():
        sizes = SMOKE if args.smoke else FULL
        measure(result, sizes, args, triton, device, start + args.budget_s)
    write_report(args.out, result)
    took = time.perf_counter() - start
    print(f"done in {took:.0f} s; results in {args.out}", flush=True)
    return 0


def run_bench_moe_gpu(
    out: str | Path,
    *,
    rounds: int = 15,
    budget_s: float = 270.0,
    expert_size: int = 64,
    tests: bool = True,
    sweep: bool = True,
    smoke: bool = False,
) -> int:
    """`ponder bench moe --device cuda`: the same run as this file's command line."""
    args = argparse.Namespace(
        out=Path(out),
        rounds=rounds,
        budget_s=budget_s,
        expert_size=expert_size,
        no_tests=not tests,
        no_sweep=not sweep,
        smoke=smoke,
    )
    return run(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--pytest"]:  # the child process of run_gpu_tests
        import pytest

        return pytest.main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per variant")
    parser.add_argument("--budget-s", type=float, default=270.0, help="stop measuring after")
    parser.add_argument("--expert-size", type=int, default=64, help="units per expert")
    parser.add_argument("--no-tests", action="store_true", help="skip pytest -m gpu")
    parser.add_argument("--no-sweep", action="store_true", help="skip the tile sweep")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, any device")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    if not __package__:
        _bootstrap()
    sys.exit(main())
